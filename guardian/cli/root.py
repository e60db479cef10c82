"""The `guardian` command's root: the Typer app, its groups (`rules`, `rollout`, `baseline`) and `--version`.

The commands themselves are in the modules beside it and register on these apps when `guardian.cli` is
imported: serve.py, remote.py (the commands that talk to a running guardian), offline.py (rules check,
replay, detect) and baseline.py (`guardian baseline fit`).
"""
from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from guardian.cli.baseline import baseline_app
from guardian.cli.console import out

# Help in Markdown: a docstring's wrapped lines read as one paragraph (also in the list of commands), blank lines
# separate paragraphs, and examples are indented code blocks.
EXIT_CODES = ("Exit codes: 0 ok or promoted; 1 rolled back; 2 invalid input, settings or rules, an error, or "
              "`guardian serve` unable to listen (its port in use); 3 paused or inconclusive (`--wait`, `watch`: "
              "paused by a user, or at the timeout paused by the guardian waiting for data, or its checks not "
              "all passing); 4 timed out while still progressing with every check passing (raise `--timeout`).")
app = typer.Typer(help="Release Guardian: guards rollouts by watching their metrics, and rolls back bad ones.",
                  epilog=f"{EXIT_CODES} Settings: `--config FILE` or `GUARDIAN_*` variables (see README).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown")
rules_app = typer.Typer(help="Validate rule files.", no_args_is_help=True, rich_markup_mode="markdown")
rollout_app = typer.Typer(help="Start, list, follow and steer rollouts through a running guardian.",
                          no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(rules_app, name="rules")
app.add_typer(rollout_app, name="rollout")
app.add_typer(baseline_app, name="baseline")


def _print_version(value: bool) -> None:
    if value:
        from guardian import __version__

        out.print(f"guardian (release-guardian) {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                show_default="off", help="print the version and exit")] = False,
          ) -> None:
    pass


def main() -> None:  # pragma: no cover
    app(prog_name=os.path.basename(sys.argv[0]) or "guardian")
