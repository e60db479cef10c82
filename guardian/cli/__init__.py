"""The `guardian` command (typer): `guardian = guardian.cli:app` in pyproject.toml, and `python -m guardian`.

root.py builds the app and its groups; importing the command modules registers their commands on it, in
the order `guardian --help` lists them.
"""
# isort: off
from guardian.cli import serve  # noqa: F401  (serve first, then the API's commands, then the offline ones)
from guardian.cli import remote  # noqa: F401
from guardian.cli import offline  # noqa: F401
# isort: on
from guardian.cli.root import app, main

__all__ = ["app", "main"]
