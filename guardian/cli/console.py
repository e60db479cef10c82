"""What every `guardian` command shares: the consoles, the exit codes, failing with a message, and the options
of the commands that talk to a running guardian."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# 0, 1 and 3 are the contract's (the `guardian` command in SPEC.md, outside this repository: --wait exits 0
# promoted, 1 rolled back, 3 paused or inconclusive); 2 is every refusal and error (invalid input, settings or
# rules, an API error, serve unable to listen); 4 is new: --wait / watch gave up while the rollout was still
# progressing with every check passing (it needed more time).
EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_ERROR, EXIT_PAUSED, EXIT_TIMED_OUT = 0, 1, 2, 3, 4
WAIT_TIMEOUT = 1800.0  # --wait's and watch's default: 30 minutes, then exit 3 or 4 (`--timeout 0`: never)

ApiOpt = Annotated[str, typer.Option("--api", envvar="GUARDIAN_API", help="the guardian's URL")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="GUARDIAN_TOKEN", show_default="none",
    help="the operator's bearer token (the guardian's `token` setting); needed to start and steer rollouts when "
         "the guardian has one")]
IdArg = Annotated[str, typer.Argument(help="the rollout's id (printed by rollout start; see rollout list)")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", show_default=f"{WAIT_TIMEOUT:.0f} s = {WAIT_TIMEOUT / 60:.0f} min",
    help="give up after this many seconds (0 = never): exit 3 if it is then paused or its checks are inconclusive, "
         "4 if it is still progressing with every check passing")]


def fail(message: str) -> typer.Exit:
    """An exit 2 with `error: message` on standard error (raise it)."""
    err.print("[red]error:[/red] ", end="")
    err.print(message, markup=False)
    return typer.Exit(EXIT_ERROR)


def esc(text: str) -> str:
    """Text shown inside rich markup, its brackets escaped."""
    from rich.markup import escape

    return escape(text)
