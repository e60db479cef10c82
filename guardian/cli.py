"""The `guardian` command (SPEC section 1)."""
from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from guardian.baseline_cli import baseline_app
from guardian.errors import RecordingError, RuleError

app = typer.Typer(help="Release Guardian: guards rollouts by watching their metrics, and rolls back bad ones.",
                  epilog="Exit codes: 0 ok / promoted, 1 rolled back, 2 invalid input or error, 3 paused or "
                         "timed out. Settings: --config FILE or GUARDIAN_* variables (see README).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
rules_app = typer.Typer(help="Validate rule files.", no_args_is_help=True)
rollout_app = typer.Typer(help="Start, follow and steer rollouts through a running guardian.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(rollout_app, name="rollout")
app.add_typer(baseline_app, name="baseline")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_ERROR, EXIT_PAUSED = 0, 1, 2, 3

ApiOpt = Annotated[str, typer.Option("--api", envvar="GUARDIAN_API", help="the guardian's URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="GUARDIAN_TOKEN", help="bearer token",
                                              show_default=False)]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(EXIT_ERROR)


# -- serve ------------------------------------------------------------------------------------------
@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file")] = None,
    host: Annotated[str | None, typer.Option(help="listen address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default 8080)")] = None,
    prometheus_url: Annotated[str | None, typer.Option(help="Prometheus base URL")] = None,
    rules: Annotated[list[str] | None, typer.Option("--rules", help="rule file or folder (repeatable)")] = None,
    db_path: Annotated[str | None, typer.Option(help="SQLite state file")] = None,
) -> None:
    """Run the guardian: HTTP API, scheduler and rule reloading. Refuses to start on invalid rules."""
    import uvicorn

    from guardian.api.app import build, create_app
    from guardian.redact import configure_logging
    from guardian.settings import load_settings

    try:
        settings = load_settings(config, host=host, port=port, prometheus_url=prometheus_url, rules=rules,
                                 db_path=db_path)
        configure_logging(settings)  # at log_level, secrets redacted (guardian/redact.py)
        components = build(settings)
    except RuleError as e:
        for p in e.problems:
            err.print(str(p), markup=False)
        err.print("[red]not started:[/red] fix the problems above")
        raise typer.Exit(EXIT_ERROR) from None
    uvicorn.run(create_app(components), host=settings.host, port=settings.port, log_level="warning",
                ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile)  # HTTPS when both are set


# -- rules check ------------------------------------------------------------------------------------
@rules_app.command("check")
def rules_check(paths: Annotated[list[Path], typer.Argument(help="rule files or folders")]) -> None:
    """Validate rule files: prints FILE:LINE: field.path: message for every problem and exits 2."""
    from guardian.rules.loader import load_paths, rule_files

    missing = [p for p in paths if not p.exists()]
    for p in missing:
        err.print(f"{p}:0: (file): no such file or folder", markup=False)
    try:
        sets = load_paths([p for p in paths if p.exists()])
    except RuleError as e:
        for problem in e.problems:
            out.print(str(problem), markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    if missing:
        raise typer.Exit(EXIT_ERROR)
    files = rule_files(paths)
    out.print(f"ok: {len(files)} file(s), {sum(len(s.rules.checks) for s in sets.values())} check(s) "
              f"for {', '.join(sorted(sets)) or 'no service'}")


# -- rollout ----------------------------------------------------------------------------------------
def _client(api: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api, headers=headers, timeout=30)


def _call(api: str, token: str | None, method: str, path: str, **kw: Any) -> Any:
    try:
        with _client(api, token) as c:
            r = c.request(method, path, **kw)
    except httpx.HTTPError as e:
        raise _fail(f"cannot reach the guardian at {api} ({e}); is `guardian serve` running?") from None
    if r.status_code >= 400:
        try:
            body = r.json()
            detail = body.get("detail")
        except ValueError:
            detail = r.text
        if isinstance(detail, list):
            detail = "; ".join(f"{d.get('field')}: {d.get('message')}" if isinstance(d, dict) else str(d)
                               for d in detail)
        raise _fail(f"HTTP {r.status_code}: {detail}")
    return r.json()


def _verdict_line(v: dict[str, Any]) -> str:
    colour = {"pass": "green", "fail": "red", "inconclusive": "yellow", "error": "magenta"}.get(v["result"], "white")
    value = "—" if v.get("value") is None else f"{v['value']:.4g}"
    n = v.get("sample_size")
    n_text = "" if n is None or n != n else f" n={n:g}"
    note = " (breaching)" if v.get("breaching") else " (warming up)" if v.get("warming_up") else ""
    return f"[{colour}]{v['check']}: {v['result']}{note}[/{colour}] {value} vs {v.get('threshold')}{n_text}"


def _status_line(r: dict[str, Any]) -> str:
    steps = r["steps"]
    left = r.get("time_left_in_step")
    parts = [
        datetime.now().strftime("%H:%M:%S"),
        f"{r['id']} {r['service']}",
        f"{r['phase']}" + (f" (by {r['paused_by']})" if r.get("paused_by") else ""),
        f"step {min(r['step_index'] + 1, len(steps))}/{len(steps)} weight {r['weight']}%",
    ]
    if left is not None:
        parts.append(f"{left:.0f}s left in step")
    line = " · ".join(parts)
    if r.get("verdicts"):
        line += "\n    " + " | ".join(_verdict_line(v) for v in r["verdicts"])
    return line


def _exit_code(r: dict[str, Any]) -> int:
    return {"promoted": EXIT_PROMOTED, "rolled_back": EXIT_ROLLED_BACK}.get(r["phase"], EXIT_PAUSED)


def _watch(api: str, token: str | None, rollout_id: str, timeout: float, interval: float = 1.0) -> int:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    seen_tick, seen_decisions = None, 0
    while True:
        r = _call(api, token, "GET", f"/v1/rollouts/{rollout_id}")
        tick = r["last_tick"]
        for d in r["decisions"][seen_decisions:]:
            out.print(f"  → [bold]{d['action']}[/bold] ({d['source']}): {d['reason']}"
                      + ("" if not d.get("outcome") or d["outcome"]["ok"] else
                         f" [red]FAILED: {d['outcome']['detail']}[/red]"))
        seen_decisions = len(r["decisions"])
        if tick != seen_tick:
            out.print(_status_line(r))
            seen_tick = tick
        if r["phase"] in ("promoted", "rolled_back"):
            out.print(f"[bold]{r['phase']}[/bold]: {r['reason']}")
            return _exit_code(r)
        if r["phase"] == "paused" and r.get("paused_by") == "user":
            out.print(f"[yellow]paused by a user[/yellow]: {r['reason']}")
            return EXIT_PAUSED
        if deadline and time.monotonic() > deadline:
            out.print(f"[yellow]still {r['phase']} after {timeout:g}s[/yellow]: {r['reason']}")
            return EXIT_PAUSED
        time.sleep(interval)


@rollout_app.command("start")
def rollout_start(
    service: Annotated[str, typer.Argument(help="the service to roll out")],
    image: Annotated[str, typer.Option("--image", help="the new version's image")],
    strategy: Annotated[str, typer.Option(help="canary | rolling | blue-green | observe")] = "canary",
    steps: Annotated[str | None, typer.Option(help="canary weights, e.g. 10,25,50,100")] = None,
    target: Annotated[str | None, typer.Option(help="actuator: noop, webhook+http://host/path")] = None,
    step_seconds: Annotated[float | None, typer.Option(help="tick length in seconds")] = None,
    analysis_seconds: Annotated[float | None, typer.Option(help="seconds each step must pass")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow it; exit 0 promoted, 1 rolled back, 3 paused")] = False,
    force: Annotated[bool, typer.Option("--force", help="start even while a critical alert freezes releases")] = False,
    timeout: Annotated[float, typer.Option(help="with --wait: exit 3 after this many seconds; 0 = never")] = 0,
    api: ApiOpt = "http://127.0.0.1:8080",
    token: TokenOpt = None,
) -> None:
    """Start a guarded rollout."""
    body: dict[str, Any] = {"service": service, "image": image, "strategy": strategy}
    if force:
        body["force"] = True
    if steps:
        try:
            body["steps"] = [int(s) for s in steps.split(",")]
        except ValueError:
            raise _fail(f"--steps: expected comma-separated whole numbers, got {steps!r}") from None
    for key, value in (("target", target), ("step_seconds", step_seconds), ("analysis_seconds", analysis_seconds)):
        if value is not None:
            body[key] = value
    r = _call(api, token, "POST", "/v1/rollouts", json=body)
    out.print(f"started rollout [bold]{r['id']}[/bold] of {r['service']} → {r['image']} "
              f"({r['strategy']}, steps {r['steps']}, target {r['target']})")
    if wait:
        raise typer.Exit(_watch(api, token, r["id"], timeout))
    out.print(r["id"])


@app.command("alerts")
def alerts(api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
           every: Annotated[bool, typer.Option("--all", help="resolved alerts too")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="as JSON")] = False) -> None:
    """List the Alertmanager alerts the guardian received: what each asks for (rollback, pause, notify),
    the rollouts in flight it is about, and whether it freezes the service's releases."""
    rows = _call(api, token, "GET", "/v1/alerts", params={"all": every})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print("no firing alerts" if not every else "no alerts received")
        return
    table = Table("alert", "status", "labels", "since", "asks for", "rollouts", "freeze")
    for a in rows:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname")
        since = datetime.fromtimestamp(a["starts_at"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(a["name"], a["status"], labels, since, a["action"],
                      ", ".join(a["rollouts"]) or "none in flight", "yes" if a["freezes"] else "")
    out.print(table)


@rollout_app.command("status")
def rollout_status(rollout_id: str, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
                   as_json: Annotated[bool, typer.Option("--json", help="the full state as JSON")] = False) -> None:
    """Show a rollout's state, step and latest verdicts."""
    r = _call(api, token, "GET", f"/v1/rollouts/{rollout_id}")
    if as_json:
        print(json.dumps(r, indent=2))
        return
    out.print(_status_line(r))
    out.print(f"  reason: {r['reason']}", markup=False)


@rollout_app.command("explain")
def rollout_explain(rollout_id: str, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
                    as_json: Annotated[bool, typer.Option("--json", help="the explanation as JSON")] = False) -> None:
    """Why a rollout was promoted, rolled back or paused: each decision in plain words, with the
    checks behind it (value, threshold, sample size, statistic) and what the actuator did. Exit 2 for
    an unknown id."""
    from guardian.explain import render_text

    e = _call(api, token, "GET", f"/v1/rollouts/{rollout_id}/explain")
    if as_json:
        print(json.dumps(e, indent=2))
    else:
        out.print(render_text(e), markup=False, highlight=False)


@app.command("report")
def report(rollout_id: str,
           output: Annotated[Path, typer.Option("--output", "-o", help="FILE.png or FILE.html")],
           api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None) -> None:
    """Draw a rollout: per-arm error ratio, slow ratio and P99, the canary's traffic share, every
    decision marked; .html adds the plain-words explanation. Exit 2 for an unknown id."""
    from guardian.report import render

    if output.suffix.lower() not in (".png", ".html", ".htm"):
        raise _fail(f"--output {output}: write the report as FILE.png or FILE.html")
    recording = _call(api, token, "GET", f"/v1/rollouts/{rollout_id}/recording")
    explanation = _call(api, token, "GET", f"/v1/rollouts/{rollout_id}/explain")
    out.print(f"wrote {render(recording, explanation, output)}")


@rollout_app.command("watch")
def rollout_watch(rollout_id: str, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
                  timeout: Annotated[float, typer.Option(help="give up (exit 3) after this many seconds")] = 0) -> None:
    """Follow a rollout live until it ends: exit 0 promoted, 1 rolled back, 3 paused or timed out."""
    raise typer.Exit(_watch(api, token, rollout_id, timeout))


def _override(action: str):
    def command(rollout_id: str, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None) -> None:
        r = _call(api, token, "POST", f"/v1/rollouts/{rollout_id}/{action}")
        out.print(_status_line(r))

    command.__doc__ = {
        "pause": "Hold the rollout where it is (the guardian keeps watching, but does not act).",
        "resume": "Resume a paused rollout.",
        "promote": "Make the new version stable now, skipping the remaining steps.",
        "rollback": "Send all traffic back to the stable version now.",
    }[action]
    return command


for _action in ("pause", "resume", "promote", "rollback"):
    rollout_app.command(_action)(_override(_action))


# -- replay -----------------------------------------------------------------------------------------
@app.command()
def replay(
    paths: Annotated[list[Path], typer.Argument(help="recordings (guardian-recording/v1) or folders of them")],
    rules: Annotated[Path | None, typer.Option(help="a rule file to judge with (default: built-in policy)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per recording per line")] = False,
    workers: Annotated[int, typer.Option(help="parallel processes (default: one per core)")] = 0,
    explain: Annotated[bool, typer.Option("--explain", help="explain every decision, as `rollout explain` does")]
    = False,
) -> None:
    """Replay recorded rollouts through the real decision engine (causal: tick by tick, never reading labels)."""
    from guardian.engine.replay import replay_many
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
            raise _fail(f"{rules}: expected one rule file, found rules for {len(sets)} services")
        ruleset = next(iter(sets.values()))
    assert isinstance(ruleset, RuleSet)
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    failed = 0
    for result in replay_many(files, ruleset, workers=workers):
        if isinstance(result, RecordingError):
            err.print(f"error: {result}", markup=False)
            failed += 1
            continue
        if explain and result.rollout is not None:
            from guardian.explain import explain as explain_rollout
            from guardian.explain import render_text

            e = explain_rollout({**result.rollout, "id": result.file}, result.decisions)
            if as_json:
                sys.stdout.write(json.dumps({**result.to_json(), "explanation": e}) + "\n")
            else:
                out.print(render_text(e) + "\n", markup=False, highlight=False)
        elif as_json:
            sys.stdout.write(json.dumps(result.to_json()) + "\n")
        else:
            tick = "" if result.tick is None else f" at tick {result.tick}"
            out.print(f"{result.file}: [bold]{result.decision}[/bold]{tick}: {result.reason}")
    if failed:
        raise typer.Exit(EXIT_ERROR)


# -- detect -----------------------------------------------------------------------------------------
@app.command()
def detect(
    input_csv: Annotated[Path, typer.Argument(metavar="IN.csv", help="a series: header with timestamp,value")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="OUT.csv (default: standard output)")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="detector parameters as a JSON object")] = None,
) -> None:
    """Run the streaming anomaly baseline over one series: timestamp,value,score,anomaly per row."""
    from guardian.detect import DetectInputError, detect_file

    try:
        alarms = detect_file(input_csv, output, model)
    except DetectInputError as e:
        err.print(f"error: {e}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    if output is not None:
        err.print(f"{output}: {alarms} anomal{'y' if alarms == 1 else 'ies'} flagged", markup=False)


def main() -> None:  # pragma: no cover
    app(prog_name=os.path.basename(sys.argv[0]) or "guardian")
