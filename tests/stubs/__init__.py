"""Stubs of services that cannot run on the test machine, following their documented APIs."""
