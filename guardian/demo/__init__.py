"""A demo service and a load generator: something real for Prometheus to scrape and the guardian to judge.

`guardian.demo.app` is a tiny HTTP service whose error ratio and latency can be changed live;
`guardian.demo.loadgen` sends traffic to it, split between a baseline and a canary by weights that a
webhook actuator can steer. Both are stdlib-threaded and light enough to run several in a test.
"""
