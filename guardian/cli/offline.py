"""The commands that need no running guardian: `rules check`, `replay` and `detect`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from guardian.cli.console import EXIT_ERROR, err, fail, out
from guardian.cli.root import app, rules_app
from guardian.errors import RecordingError, RuleError


@rules_app.command("check")
def rules_check(paths: Annotated[list[Path], typer.Argument(help="rule files or folders")]) -> None:
    """Validate rule files: prints FILE:LINE: field.path: message for every problem and exits 2."""
    from guardian.rules.loader import describe, empty_folders, load_paths, rule_files

    missing = [p for p in paths if not p.exists()]
    for p in missing:
        err.print(f"{p}:0: (file): no such file or folder", markup=False)
    empty = empty_folders(p for p in paths if p.exists())  # checking nothing is not "ok"
    for p in empty:
        err.print(f"{p}:0: (file): no rule files (*.yaml, *.yml) in this folder", markup=False)
    missing += empty
    try:
        sets = load_paths([p for p in paths if p.exists()])
    except RuleError as e:
        for problem in e.problems:
            out.print(str(problem), markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    if missing:
        raise typer.Exit(EXIT_ERROR)
    if problems := _store_problems(sets.values()):
        for problem in problems:
            out.print(str(problem), markup=False)
        raise typer.Exit(EXIT_ERROR)
    files = rule_files(paths)
    out.print(f"ok: {len(files)} file(s), {sum(len(s.rules.checks) for s in sets.values())} check(s) "
              f"for {', '.join(sorted(sets)) or 'no service'}", markup=False)
    for service in sorted(sets):  # what each check does on failure, defaults named
        out.print(f"  {sets[service].source} ({service}):", markup=False)
        for line in describe(sets[service]):
            out.print(f"    {line}", markup=False)


STORE_SETTINGS = ("source", "prometheus", "victoriametrics", "influxdb", "cloudwatch", "datadog")


def _store_problems(rulesets) -> list:
    """A rule file's `source:` that this environment's settings give no address or credentials for (GUARDIAN_*
    variables), and the settings of a metric store that `guardian serve` would refuse (a malformed URL, a missing
    key …), as `(settings):1: FIELD: message`; other settings problems are `guardian serve`'s to report."""
    from guardian.api.components import source_problems
    from guardian.settings import load_settings

    try:
        settings = load_settings()
    except RuleError as e:
        return [p for p in e.problems if p.field.startswith(STORE_SETTINGS)  # a field, or the whole (a model check)
                or any(f"{store}_" in p.message or f"source is {store}" in p.message for store in STORE_SETTINGS)]
    return source_problems(settings, rulesets)


@app.command()
def replay(
    paths: Annotated[list[Path], typer.Argument(help="recordings (guardian-recording/v1) or folders of them")],
    rules: Annotated[Path | None, typer.Option(help="a rule file to judge with",
                                               show_default="the built-in default policy")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per recording per line",
                                          show_default="off")] = False,
    workers: Annotated[int, typer.Option(help="parallel processes; 0 = one per core")] = 0,
    explain: Annotated[bool, typer.Option("--explain", help="explain every decision, as `rollout explain` does",
                                          show_default="off")] = False,
) -> None:
    """Replay recorded rollouts through the real decision engine (causal: tick by tick, never reading labels)."""
    from guardian.engine.replay import explanation, policy_words, replay_many, ruled_elsewhere
    from guardian.rules.loader import DEFAULT_RULESET, RuleSet, load_paths

    ruleset = DEFAULT_RULESET
    if rules is not None:
        try:
            sets = load_paths([rules])
        except RuleError as e:
            for p in e.problems:
                err.print(str(p), markup=False)
            raise typer.Exit(EXIT_ERROR) from None
        if len(sets) != 1:
            raise fail(f"{rules}: expected one rule file, found rules for {len(sets)} services")
        ruleset = next(iter(sets.values()))
    assert isinstance(ruleset, RuleSet)
    # which policy decides, on standard error (standard output stays one result per recording)
    err.print(f"replay: judging with {policy_words(ruleset.source)} ("
              + ", ".join(c.name for c in ruleset.rules.checks) + ")"
              + ("; --rules FILE judges with a rule file" if rules is None else ""), markup=False)
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    failed = 0
    elsewhere: dict[str, list[str]] = {}  # rules a recording says it ran under (labels.rules) -> its files
    for result in replay_many(files, ruleset, workers=workers):
        if isinstance(result, RecordingError):
            err.print(f"error: {result}", markup=False)
            failed += 1
            continue
        if (ran_under := ruled_elsewhere(result)) is not None:
            elsewhere.setdefault(ran_under, []).append(result.file)
        if explain and result.rollout is not None:
            from guardian.reporting.explain import render_text

            e = explanation(result)
            if as_json:
                sys.stdout.write(json.dumps({**result.to_json(), "explanation": e}) + "\n")
            else:
                out.print(render_text(e) + "\n", markup=False, highlight=False)
        elif as_json:
            sys.stdout.write(json.dumps(result.to_json()) + "\n")
        else:
            tick = "" if result.tick is None else f" at tick {result.tick}"
            out.print(f"{result.file}: [bold]{result.decision}[/bold]{tick}: {result.reason}")
    for source, names in elsewhere.items():  # shown, never judged: the decisions above are the policy's
        which = names[0] if len(names) == 1 else f"{len(names)} recordings ({', '.join(names[:3])}" + (
            ", …)" if len(names) > 3 else ")")
        if source == DEFAULT_RULESET.source:
            err.print(f"note: {which} ran under the built-in default policy; judged here with "
                      f"{policy_words(ruleset.source)} (leave out --rules to judge with the default)", markup=False)
            continue
        here = "found here" if Path(source).is_file() else "not found here"
        err.print(f"note: {which} ran under {source} ({here}); judged here with {policy_words(ruleset.source)}: "
                  f"pass --rules {source} to judge with the rules it ran under", markup=False)
    if failed:
        raise typer.Exit(EXIT_ERROR)


# -- detect -----------------------------------------------------------------------------------------
@app.command()
def detect(
    input_csv: Annotated[Path, typer.Argument(metavar="IN.csv", help="a series: header with timestamp,value")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="OUT.csv",
                                                show_default="standard output")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="detector parameters as a JSON object",
                                               show_default="the built-in parameters")] = None,
) -> None:
    """Run the streaming anomaly baseline over one series: timestamp,value,score,anomaly per row."""
    from guardian.anomaly.detect import DetectInputError, detect_file

    try:
        alarms = detect_file(input_csv, output, model)
    except DetectInputError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    if output is not None:
        err.print(f"{output}: {alarms} anomal{'y' if alarms == 1 else 'ies'} flagged", markup=False)
