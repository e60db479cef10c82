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

from guardian import cli_status as status
from guardian.baseline_cli import baseline_app
from guardian.errors import RecordingError, RuleError

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
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

# 0, 1 and 3 are the contract's (SPEC section 1: --wait exits 0 promoted, 1 rolled back, 3 paused or inconclusive);
# 2 is every refusal and error (invalid input, settings or rules, an API error, serve unable to listen); 4 is new:
# --wait / watch gave up while the rollout was still progressing with every check passing (it needed more time).
EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_ERROR, EXIT_PAUSED, EXIT_TIMED_OUT = 0, 1, 2, 3, 4
WAIT_TIMEOUT = 1800.0  # --wait's and watch's default: 30 minutes, then exit 3 or 4 (`--timeout 0`: never)

ApiOpt = Annotated[str, typer.Option("--api", envvar="GUARDIAN_API", help="the guardian's URL")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="GUARDIAN_TOKEN", show_default="none",
    help="the operator's bearer token (the guardian's `token` setting); needed to start and steer rollouts when "
         "the guardian has one")]


def _fail(message: str) -> typer.Exit:
    err.print("[red]error:[/red] ", end="")
    err.print(message, markup=False)
    return typer.Exit(EXIT_ERROR)


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


# -- serve ------------------------------------------------------------------------------------------
def _listen(host: str, port: int) -> Any:
    """Bind and listen on host:port before anything starts, so a taken port is said plainly (exit 2) and
    "ready" is never logged by a guardian that cannot listen. Returns the listening socket."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a TIME_WAIT port is reusable
    change = ("choose another with --port, GUARDIAN_PORT or `port:` in the --config file"
              if port else "see --host / GUARDIAN_HOST")
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections made while the guardian starts wait in the backlog
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            why = (f"port {port} on {host} is already in use (another guardian serve, or another program: "
                   f"`ss -ltnp 'sport = :{port}'` shows which); stop it, or {change}")
        elif e.errno == errno.EACCES:
            why = f"not allowed to listen on port {port} on {host} (ports below 1024 need privileges); {change}"
        elif e.errno in (errno.EADDRNOTAVAIL, socket.EAI_NONAME) or isinstance(e, socket.gaierror):
            why = (f"cannot listen on {host}: not an address of this machine; set another with --host, "
                   "GUARDIAN_HOST or `host:` in the --config file")
        else:
            why = f"cannot listen on {host}:{port}: {e.strerror or e}"
        err.print("[red]not started:[/red] ", end="")
        err.print(why, markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    return sock


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", show_default="none",
                                                help="YAML settings file (every setting; see guardian/settings.py)")]
    = None,
    host: Annotated[str | None, typer.Option(show_default="127.0.0.1",
                                             help="listen address; also GUARDIAN_HOST or `host:` in the config")]
    = None,
    port: Annotated[int | None, typer.Option(show_default="8080",
                                             help="listen port; also GUARDIAN_PORT or `port:` in the config")] = None,
    prometheus_url: Annotated[str | None, typer.Option(show_default="http://127.0.0.1:9090",
                                                       help="Prometheus base URL; also GUARDIAN_PROMETHEUS_URL")]
    = None,
    rules: Annotated[list[str] | None, typer.Option("--rules", show_default="rules",
                                                    help="rule file or folder (repeatable); also GUARDIAN_RULES")]
    = None,
    db_path: Annotated[str | None, typer.Option(show_default="var/guardian.db",
                                                help="SQLite state file; also GUARDIAN_DB_PATH")] = None,
) -> None:
    """Run the guardian: HTTP API, scheduler and rule reloading.

    It listens first: a port in use, invalid settings or invalid rules stop it before anything starts, with
    exit 2 and what to change. Options override the `--config` file and `GUARDIAN_*` variables.

    **Examples**

        guardian serve --prometheus-url http://127.0.0.1:9090 --rules rules/
        GUARDIAN_TOKEN=$(cat token) guardian serve --host 0.0.0.0 --port 8080
        guardian serve --config guardian.yaml
    """
    import uvicorn

    from guardian.api.app import create_app
    from guardian.api.components import build
    from guardian.redact import configure_logging
    from guardian.settings import load_settings

    try:
        settings = load_settings(config, host=host, port=port, prometheus_url=prometheus_url, rules=rules,
                                 db_path=db_path)
    except RuleError as e:
        for p in e.problems:
            err.print(str(p), markup=False)
        err.print("[red]not started:[/red] fix the problems above")
        raise typer.Exit(EXIT_ERROR) from None
    sock = _listen(settings.host, settings.port)  # before anything is built, started or logged as ready
    try:
        configure_logging(settings)  # at log_level, secrets redacted (guardian/redact.py)
        components = build(settings)
    except RuleError as e:
        sock.close()
        for p in e.problems:
            err.print(str(p), markup=False)
        err.print("[red]not started:[/red] fix the problems above")
        raise typer.Exit(EXIT_ERROR) from None
    from loguru import logger

    bound_host, bound_port = sock.getsockname()[:2]
    scheme = "https" if settings.tls_certfile else "http"
    logger.info("listening on {}://{}:{}", scheme, f"[{bound_host}]" if ":" in bound_host else bound_host, bound_port)
    server = uvicorn.Server(uvicorn.Config(  # HTTPS when both TLS files are set
        create_app(components), host=settings.host, port=bound_port, log_level="warning",
        ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile))
    try:
        server.run(sockets=[sock])
    except SystemExit as e:  # uvicorn's startup failure (its exit 3, which is "paused" here): say so, exit 2
        if e.code in (0, None):
            raise
        err.print("[red]not started:[/red] the guardian failed while starting (see the log above)")
        raise typer.Exit(EXIT_ERROR) from None
    finally:
        sock.close()


# -- rules check ------------------------------------------------------------------------------------
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
    files = rule_files(paths)
    out.print(f"ok: {len(files)} file(s), {sum(len(s.rules.checks) for s in sets.values())} check(s) "
              f"for {', '.join(sorted(sets)) or 'no service'}", markup=False)
    for service in sorted(sets):  # what each check does on failure, defaults named
        out.print(f"  {sets[service].source} ({service}):", markup=False)
        for line in describe(sets[service]):
            out.print(f"    {line}", markup=False)


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
        if r.status_code == 401:
            detail = (f"{detail}: " + ("the token given (--token or GUARDIAN_TOKEN) was refused; give the guardian's "
                                       "operator token" if token else
                                       "this guardian needs its operator token: pass --token TOKEN or set "
                                       "GUARDIAN_TOKEN (the `token` setting of `guardian serve`)"))
        raise _fail(f"HTTP {r.status_code}: {detail}")
    return r.json()


def _exit_code(r: dict[str, Any]) -> int:
    """At the end of --wait / watch: 0 promoted, 1 rolled back; else 3 when it is paused or its latest checks are
    not all passing (inconclusive, held, warming up), 4 when it is progressing with every check passing (or none
    judged yet): it only needed more time."""
    if r["phase"] in ("promoted", "rolled_back"):
        return EXIT_PROMOTED if r["phase"] == "promoted" else EXIT_ROLLED_BACK
    if r["phase"] == "paused" or any(v.get("result") != "pass" for v in r.get("verdicts") or []):
        return EXIT_PAUSED
    return EXIT_TIMED_OUT


def _gave_up(r: dict[str, Any], timeout: float) -> str:
    """Why --wait / watch stopped at its timeout, and what to do."""
    after = status.seconds(timeout)
    held = "; ".join(_esc(f"{v.get('check')}: {status.label(v)}, {status.detail(v)}")
                     for v in r.get("verdicts") or [] if v.get("result") != "pass")
    if r["phase"] == "paused":
        if r.get("paused_by") == "guardian":
            return (f"[yellow]paused by the guardian, waiting for data[/yellow] after {after} (exit 3): "
                    f"{held or _esc(status.short_reason(r))}. It resumes by itself when the data comes; "
                    f"`guardian rollout explain {r['id']}` says more")
        return f"[yellow]{status.phase_text(r)}[/yellow] after {after} (exit 3): {_esc(status.short_reason(r))}"
    if _exit_code(r) == EXIT_PAUSED:
        return f"[yellow]still progressing after {after}, its checks inconclusive[/yellow] (exit 3): {held}"
    judged = "every check passing so far" if r.get("verdicts") else "nothing judged yet"
    return (f"[yellow]still progressing after {after}[/yellow], {judged} (exit 4): {_esc(status.state_line(r))}; "
            "give it more time with --timeout (0 = never)")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _watch(api: str, token: str | None, rollout_id: str, timeout: float, interval: float = 1.0) -> int:
    """Follow a rollout, printing a line only when something changes, until it ends, a user pauses it, or
    `timeout` seconds pass (0: never). Returns the exit code."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    follower = status.Follower()
    while True:
        r = _call(api, token, "GET", f"/v1/rollouts/{rollout_id}")
        for line in follower.lines(r):
            out.print(line)
        if r["phase"] in ("promoted", "rolled_back"):
            out.print(f"[bold]{status.phase_text(r)}[/bold]: {_esc(status.short_reason(r))} "
                      f"(in full: guardian rollout explain {rollout_id})")
            return _exit_code(r)
        if r["phase"] == "paused" and r.get("paused_by") == "user":
            out.print(f"[yellow]paused by a user[/yellow] (exit 3): {_esc(status.short_reason(r))}")
            return EXIT_PAUSED
        if deadline and time.monotonic() >= deadline:
            out.print(_gave_up(r, timeout))
            return _exit_code(r)
        time.sleep(interval)


IdArg = Annotated[str, typer.Argument(help="the rollout's id (printed by rollout start; see rollout list)")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", show_default=f"{WAIT_TIMEOUT:.0f} s = {WAIT_TIMEOUT / 60:.0f} min",
    help="give up after this many seconds (0 = never): exit 3 if it is then paused or its checks are inconclusive, "
         "4 if it is still progressing with every check passing")]


@rollout_app.command("start")
def rollout_start(
    service: Annotated[str, typer.Argument(help="the service to roll out")],
    image: Annotated[str, typer.Option("--image", help="the new version's image")],
    strategy: Annotated[str, typer.Option(help="canary | rolling | blue-green | observe")] = "canary",
    steps: Annotated[str | None, typer.Option(show_default="the guardian's `steps`: 10,25,50,100",
                                              help="canary weights in %, rising, e.g. 10,25,50,100")] = None,
    target: Annotated[str | None, typer.Option(show_default="the guardian's `default_target`: noop",
                                               help="actuator: noop, webhook+http://host:port/path, docker:..., "
                                                    "nginx:..., swarm:SERVICE, kubernetes:NS/NAME")] = None,
    step_seconds: Annotated[float | None, typer.Option(show_default="the guardian's `tick_seconds`: 10",
                                                       help="tick length in seconds")] = None,
    analysis_seconds: Annotated[float | None, typer.Option(show_default="the guardian's `analysis_seconds`: 60",
                                                           help="seconds each step must pass")] = None,
    wait: Annotated[bool, typer.Option("--wait", show_default="off", help=(
        "follow it until it ends (a line when something changes); exit 0 promoted, 1 rolled back, 3 paused or "
        "inconclusive, 4 still progressing at --timeout"))] = False,
    force: Annotated[bool, typer.Option("--force", show_default="off",
                                        help="start even while a critical alert freezes releases")] = False,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", show_default="off", help=(
        "start even when a signal the policy needs has no series (see `guardian doctor`): it starts paused "
        "and resumes when the data comes"))] = False,
    timeout: TimeoutOpt = WAIT_TIMEOUT,
    api: ApiOpt = "http://127.0.0.1:8080",
    token: TokenOpt = None,
) -> None:
    """Start a guarded rollout; with --wait, follow it to its end.

    Prints the new rollout's id. Without --steps, --target, --step-seconds or --analysis-seconds the guardian's
    settings decide. With --wait a line is printed only when the phase, step, a check's verdict or a decision
    changes, and the exit code says how it ended; --timeout bounds the wait (30 minutes unless said: raise it for
    long rollouts, 0 waits for ever).

    **Examples**

        guardian rollout start checkout --image registry.local/checkout:v2 --wait
        guardian rollout start checkout --image registry.local/checkout:v2 --steps 10,50,100 \\
            --target webhook+http://127.0.0.1:9100/weights --wait --timeout 600
        guardian rollout start checkout --image checkout:v3 --strategy observe   # someone else deploys
    """
    body: dict[str, Any] = {"service": service, "image": image, "strategy": strategy}
    if force:
        body["force"] = True
    if allow_missing:
        body["allow_missing"] = True
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


STATUS_STYLE = {"ok": "green", "idle": "yellow", "missing": "red", "abstains": "dim", "pending": "cyan",
                "unavailable": "red", "unchecked": "yellow"}


@app.command("doctor")
def doctor(
    service: Annotated[str, typer.Argument(help="the service (its rule file's `service`, else the default policy)")],
    window: Annotated[float, typer.Option(help="seconds of values to read")] = 60.0,
    canary: Annotated[str | None, typer.Option(show_default="the rule file's arms", help=(
        "the canary's arm label value, where the rule file's follows the release, e.g. {version}"))] = None,
    baseline: Annotated[str | None, typer.Option(show_default="the rule file's arms",
                                                 help="the baseline's arm label value, likewise")] = None,
    prometheus_url: Annotated[str | None, typer.Option(show_default="ask the running guardian (--api)", help=(
        "ask this Prometheus directly, with the rules in --rules, no guardian needed"))] = None,
    rules: Annotated[list[Path] | None, typer.Option(show_default="rules", help=(
        "with --prometheus-url: rule files or folders (repeat the option for several)"))] = None,
    as_json: Annotated[bool, typer.Option("--json", show_default="off", help="as JSON")] = False,
    api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
) -> None:
    """Check a service's metrics before a rollout is judged on them: every signal its policy reads, for both
    arms — is there data, and if not, why (no series with that `service` label, listing the services there are;
    no arm label; a histogram without the latency objective's bucket, listing its buckets; a counter that
    does not move). Exit 0 when every signal a check needs is there, 1 when one is missing (a rollout would
    then be refused, or start paused with --allow-missing), 2 on an error.

    **Examples**

        guardian doctor checkout
        guardian doctor checkout --prometheus-url http://127.0.0.1:9090 --rules rules/
        guardian doctor checkout --canary v2 --baseline v1    # arms: {label: version, canary: "{version}" …}
    """
    arm_values = {k: v for k, v in (("canary", canary), ("baseline", baseline)) if v}
    if prometheus_url:
        here = rules if rules else [Path("rules")] if Path("rules").is_dir() else []  # none: the default policy
        report = _doctor_here(service, prometheus_url, here, window, arm_values)
    else:
        report = _call(api, token, "GET", f"/v1/services/{service}/doctor", params={"window": window, **arm_values})
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_doctor(report)
    raise typer.Exit(1 if report["blocking"] else 0)


def _doctor_here(service: str, prometheus_url: str, rules: list[Path], window: float,
                 arm_values: dict[str, str]) -> dict[str, Any]:
    from guardian.engine.preflight import checkup
    from guardian.rules.book import RuleBook
    from guardian.sources.prometheus import PrometheusSource

    try:
        book = RuleBook([str(p) for p in rules])
    except RuleError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None
    return checkup(book, PrometheusSource(prometheus_url), service, time.time(), window=window,
                   arm_values=arm_values)


def _print_doctor(report: dict[str, Any]) -> None:
    """A line per signal (a line per arm where the arms differ), its status coloured, then what to do."""
    arms = ", ".join(f"{a} {report['arm_label']}=\"{v}\"" for a, v in report["arms"].items()) or "none known"
    out.print(f"[bold]{_esc(report['service'])}[/bold]: policy {_esc(report['rules'])}; arms {_esc(arms)}; "
              f"values over the last {report['window_seconds']:g} s")
    by_signal: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        by_signal.setdefault(f["signal"], []).append(f)
    for signal, found in by_signal.items():
        same = len({(f["status"], f["detail"]) for f in found}) == 1
        groups = [found] if same else [[f] for f in found]
        for group in groups:
            f = group[0]
            style = STATUS_STYLE.get(f["status"], "")
            shown = f["status"] + (" (blocks)" if f["blocking"] else "" if f["gating"] else ", optional")
            who = " and ".join(g["arm"] for g in group)
            out.print(f"  [bold]{signal}[/bold] ({who}): [{style}]{shown}[/{style}] — {_esc(f['detail'])} "
                      f"[dim](read by {', '.join(f['checks'])})[/dim]")
    blocking = list(dict.fromkeys(f["signal"] for f in report["findings"] if f["blocking"]))
    if blocking:
        out.print(f"[red]no data for {', '.join(blocking)}[/red], which a check needs: a rollout of "
                  f"{_esc(report['service'])} would be refused (or start paused with --allow-missing) until it has")
    else:
        out.print("[green]every signal a check needs is there[/green]")


@app.command("alerts")
def alerts(api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
           every: Annotated[bool, typer.Option("--all", show_default="off", help="resolved alerts too")] = False,
           as_json: Annotated[bool, typer.Option("--json", show_default="off", help="as JSON")] = False) -> None:
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
def rollout_status(rollout_id: IdArg, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
                   as_json: Annotated[bool, typer.Option("--json", show_default="off",
                                                         help="the full state as JSON")] = False) -> None:
    """Show a rollout's state, step and latest verdicts, each with why.

    One line for the rollout (phase, step, weight, time left in the step), then one line per check of its
    latest tick: pass with what was measured, or fail, hold, warming up, inconclusive with the reason.

    **Examples**

        guardian rollout status 5efef45bf7b8
        guardian rollout status 5efef45bf7b8 --json | jq '.verdicts[] | {check, result, reason}'
    """
    r = _call(api, token, "GET", f"/v1/rollouts/{rollout_id}")
    if as_json:
        print(json.dumps(r, indent=2))
        return
    _print_state(r)
    out.print(f"  reason: {status.short_reason(r)} (in full: guardian rollout explain {r['id']})", markup=False)


def _print_state(r: dict[str, Any]) -> None:
    out.print(f"{r['id']} {r['service']} → {r['image']}: {status.phase_text(r)}, {status.step_text(r)}"
              + (f", {status.seconds(r['time_left_in_step'])} left in step"
                 if r.get("time_left_in_step") is not None else ""), markup=False)
    for v in r.get("verdicts") or []:
        out.print(f"  {status.verdict_line(v)}")


@rollout_app.command("list")
def rollout_list(
    service: Annotated[str | None, typer.Option(show_default="every service",
                                                help="only this service's rollouts")] = None,
    phase: Annotated[str | None, typer.Option(show_default="every phase",
                                              help="only this phase: progressing | paused | promoted | rolled_back")]
    = None,
    active: Annotated[bool, typer.Option("--active", show_default="off",
                                         help="only rollouts in flight (progressing or paused)")] = False,
    as_json: Annotated[bool, typer.Option("--json", show_default="off", help="as JSON")] = False,
    api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
) -> None:
    """List the rollouts the guardian knows, oldest first: id, service, image, phase, step and why.

    The filters are the API's (GET /v1/rollouts?service=S&phase=P&active=true); --json prints each rollout's
    whole state.

    **Examples**

        guardian rollout list
        guardian rollout list --service checkout --phase rolled_back
    """
    params: dict[str, Any] = {"active": active}
    if service:
        params["service"] = service
    if phase:
        params["phase"] = phase
    rows = _call(api, token, "GET", "/v1/rollouts", params=params)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print("no rollouts")
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=12)  # never cut: it is what the other commands take
    for name in ("service", "image", "strategy"):
        table.add_column(name)
    table.add_column("phase", no_wrap=True, min_width=11)
    for name in ("step", "started", "why"):
        table.add_column(name, ratio=3 if name == "why" else None)
    for r in rows:
        started = datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        phase_shown = r["phase"] + (f" (by {r['paused_by']})" if r.get("paused_by") else "")
        table.add_row(r["id"], r["service"], r["image"], r["strategy"], phase_shown, status.step_text(r), started,
                      status.shorten(r.get("reason") or "", 80))
    out.print(table)


@rollout_app.command("explain")
def rollout_explain(rollout_id: IdArg, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
                    as_json: Annotated[bool, typer.Option("--json", show_default="off",
                                                          help="the explanation as JSON")] = False) -> None:
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
def rollout_watch(rollout_id: IdArg, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
                  timeout: TimeoutOpt = WAIT_TIMEOUT) -> None:
    """Follow a rollout live until it ends: exit 0 promoted, 1 rolled back, 3 paused or inconclusive, 4 still
    progressing at --timeout.

    A line is printed only when something changes: its phase, step or weight, a check's verdict (with why), or a
    decision. A user's pause ends the watch at once (exit 3).

    **Examples**

        guardian rollout watch 5efef45bf7b8
        guardian rollout watch 5efef45bf7b8 --timeout 0   # for as long as it takes
    """
    raise typer.Exit(_watch(api, token, rollout_id, timeout))


def _override(action: str):
    def command(rollout_id: IdArg, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None) -> None:
        r = _call(api, token, "POST", f"/v1/rollouts/{rollout_id}/{action}")
        _print_state(r)

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
            raise _fail(f"{rules}: expected one rule file, found rules for {len(sets)} services")
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
            from guardian.explain import render_text

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
