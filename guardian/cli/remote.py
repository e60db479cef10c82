"""The commands that talk to a running guardian over its HTTP API: `rollout start|status|list|explain|watch|
pause|resume|promote|rollback`, `doctor` (or Prometheus directly), `alerts` and `report`."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from guardian.cli import status
from guardian.cli.console import (
    EXIT_ERROR,
    EXIT_PAUSED,
    EXIT_PROMOTED,
    EXIT_ROLLED_BACK,
    EXIT_TIMED_OUT,
    WAIT_TIMEOUT,
    ApiOpt,
    IdArg,
    TimeoutOpt,
    TokenOpt,
    err,
    esc,
    fail,
    out,
)
from guardian.cli.root import app, rollout_app
from guardian.domain import APPROVE_STEP
from guardian.errors import RuleError
from guardian.rules.models import parse_duration


def _client(api: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api, headers=headers, timeout=30)


def _call(api: str, token: str | None, method: str, path: str, **kw: Any) -> Any:
    try:
        with _client(api, token) as c:
            r = c.request(method, path, **kw)
    except httpx.HTTPError as e:
        raise fail(f"cannot reach the guardian at {api} ({e}); is `guardian serve` running?") from None
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
        raise fail(f"HTTP {r.status_code}: {detail}")
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
    held = "; ".join(esc(f"{v.get('check')}: {status.label(v)}, {status.detail(v)}")
                     for v in r.get("verdicts") or [] if v.get("result") != "pass")
    if r["phase"] == "paused":
        if r.get("paused_by") == "guardian":
            return (f"[yellow]paused by the guardian, waiting for data[/yellow] after {after} (exit 3): "
                    f"{held or esc(status.short_reason(r))}. It resumes by itself when the data comes; "
                    f"`guardian rollout explain {r['id']}` says more")
        return f"[yellow]{status.phase_text(r)}[/yellow] after {after} (exit 3): {esc(status.short_reason(r))}"
    if _exit_code(r) == EXIT_PAUSED:
        return f"[yellow]still progressing after {after}, its checks inconclusive[/yellow] (exit 3): {held}"
    judged = "every check passing so far" if r.get("verdicts") else "nothing judged yet"
    return (f"[yellow]still progressing after {after}[/yellow], {judged} (exit 4): {esc(status.state_line(r))}; "
            "give it more time with --timeout (0 = never)")


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
            out.print(f"[bold]{status.phase_text(r)}[/bold]: {esc(status.short_reason(r))} "
                      f"(in full: guardian rollout explain {rollout_id})")
            return _exit_code(r)
        if r["phase"] == "paused" and r.get("paused_by") == "user":
            out.print(f"[yellow]paused by a user[/yellow] (exit 3): {esc(status.short_reason(r))}")
            return EXIT_PAUSED
        if deadline and time.monotonic() >= deadline:
            out.print(_gave_up(r, timeout))
            return _exit_code(r)
        time.sleep(interval)


@rollout_app.command("start")
def rollout_start(
    service: Annotated[str, typer.Argument(help="the service to roll out")],
    image: Annotated[str, typer.Option("--image", help="the new version's image")],
    strategy: Annotated[str, typer.Option(help="canary | rolling | blue-green | observe")] = "canary",
    steps: Annotated[str | None, typer.Option(show_default="the guardian's `steps`: 10,25,50,100",
                                              help="canary weights in %, rising, e.g. 10,25,50,100; `approve` "
                                                   "after a step holds its end for `guardian rollout approve ID`, "
                                                   "e.g. 10,25,approve,50,100")] = None,
    target: Annotated[str | None, typer.Option(show_default="the guardian's `default_target`: noop",
                                               help="actuator: noop, webhook+http://host:port/path, docker:..., "
                                                    "nginx:..., swarm:SERVICE, kubernetes:NS/NAME")] = None,
    step_seconds: Annotated[float | None, typer.Option(show_default="the guardian's `tick_seconds`: 10",
                                                       help="tick length in seconds")] = None,
    analysis_seconds: Annotated[float | None, typer.Option(show_default="the guardian's `analysis_seconds`: 60",
                                                           help="seconds each step must pass")] = None,
    bake: Annotated[str | None, typer.Option(show_default="the rule file's `bake`: 0 unless it says", help=(
        "after the last step, this long at 100% with the previous version warm, still judged, before it is "
        "promoted (e.g. 10m, 90s; 0: none)"))] = None,
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
        guardian rollout start checkout --image checkout:v4 --bake 10m --wait   # judged 10 min at 100%
    """
    body: dict[str, Any] = {"service": service, "image": image, "strategy": strategy}
    if force:
        body["force"] = True
    if allow_missing:
        body["allow_missing"] = True
    if steps:
        try:
            body["steps"] = [APPROVE_STEP if s.strip().lower() == APPROVE_STEP else int(s) for s in steps.split(",")]
        except ValueError:
            raise fail(f"--steps: expected comma-separated whole numbers (and `approve` after a step that must wait "
                       f"for a human go), got {steps!r}") from None
    for key, value in (("target", target), ("step_seconds", step_seconds), ("analysis_seconds", analysis_seconds)):
        if value is not None:
            body[key] = value
    if bake is not None:
        try:
            body["bake_seconds"] = parse_duration(bake)
        except ValueError as e:
            raise fail(f"--bake: {e} (e.g. 10m, 90s, 0)") from None
    r = _call(api, token, "POST", "/v1/rollouts", json=body)
    if r.get("status") == "accepted" and "intent" in r:  # the service's watch is held by another replica
        r = _follow_intent(api, token, r)
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
    here: Annotated[bool, typer.Option("--here", show_default="off", help=(
        "ask the metric stores directly, as `guardian serve` would with the same settings (GUARDIAN_SOURCE, "
        "GUARDIAN_INFLUXDB_URL, … or --config), no guardian needed: Prometheus, VictoriaMetrics, InfluxDB, "
        "CloudWatch or Datadog, the one the service's rule file names (`source:`) else GUARDIAN_SOURCE"))] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", show_default="none", help=(
        "with --here (implied): the YAML settings file `guardian serve --config` reads"))] = None,
    source: Annotated[str | None, typer.Option("--source", show_default="GUARDIAN_SOURCE", help=(
        "with --here (implied): the store of services whose rule file names none: prometheus, victoriametrics, "
        "influxdb, cloudwatch or datadog"))] = None,
    url: Annotated[str | None, typer.Option("--url", show_default="its GUARDIAN_*_URL", help=(
        "with --here (implied): the address of the store the service is read from, the one its rule file names "
        "(`source:`) else --source (CloudWatch: its endpoint; the region, database, keys and credentials come from "
        "the settings, never the command line)"))] = None,
    prometheus_url: Annotated[str | None, typer.Option(show_default="ask the running guardian (--api)", help=(
        "ask this Prometheus directly, with the rules in --rules, no guardian needed"))] = None,
    rules: Annotated[list[Path] | None, typer.Option(show_default="rules", help=(
        "with --here or --prometheus-url: rule files or folders (repeat the option for several)"))] = None,
    as_json: Annotated[bool, typer.Option("--json", show_default="off", help="as JSON")] = False,
    api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None,
) -> None:
    """Check a service's metrics before a rollout is judged on them: every signal its policy reads, for both
    arms — is there data, and if not, why, in the store's own terms (no series, measurement or metric of that
    name; none for the service, listing the services there are; no arm label, tag or dimension, or not the arm's
    value, listing the values; a histogram without the latency objective's bucket, listing its buckets; a counter
    that does not move). Exit 0 when every signal a check needs is there, 1 when one is missing (a rollout would
    then be refused, or start paused with --allow-missing), 2 on an error — a store that refused (401/403) or could
    not be reached counts as one: its signals show `unavailable` with the cause.

    It asks the running guardian (--api), or the stores directly: `--here` builds them from the settings `guardian
    serve` reads (GUARDIAN_* variables or --config; `--source` and `--url` override the store and its address),
    `--prometheus-url` asks one Prometheus.

    **Examples**

        guardian doctor checkout
        guardian doctor checkout --prometheus-url http://127.0.0.1:9090 --rules rules/
        guardian doctor checkout --source influxdb --url http://127.0.0.1:8086   # GUARDIAN_INFLUXDB_* for the rest
        GUARDIAN_SOURCE=cloudwatch GUARDIAN_CLOUDWATCH_REGION=eu-west-1 guardian doctor checkout --here
        guardian doctor checkout --here --config guardian.yaml --json
        guardian doctor checkout --canary v2 --baseline v1    # arms: {label: version, canary: "{version}" …}
    """
    arm_values = {k: v for k, v in (("canary", canary), ("baseline", baseline)) if v}
    if prometheus_url and (here or config or source or url):
        raise fail("--prometheus-url asks one Prometheus; --here (--config, --source, --url) asks the stores the "
                   "settings name: give one or the other")
    if prometheus_url:
        found = rules if rules else [Path("rules")] if Path("rules").is_dir() else []  # none: the default policy
        report = _doctor_here(service, prometheus_url, found, window, arm_values)
    elif here or config or source or url:
        report = _doctor_from_settings(service, config, source, url, rules, window, arm_values)
    else:
        report = _call(api, token, "GET", f"/v1/services/{service}/doctor", params={"window": window, **arm_values})
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_doctor(report)
    raise typer.Exit(_doctor_exit(report))


def _doctor_exit(report: dict[str, Any]) -> int:
    """2 when the store could not be asked about a signal a check needs (nothing known of it), else 1 when one is
    missing, else 0."""
    if any(f["status"] == "unavailable" and f["gating"] for f in report["findings"]):
        return EXIT_ERROR
    return 1 if report["blocking"] else 0


def _rule_book(rules: list[Path] | list[str]) -> Any:
    from guardian.rules.book import RuleBook

    try:
        return RuleBook([str(p) for p in rules])
    except RuleError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None


def _doctor_here(service: str, prometheus_url: str, rules: list[Path], window: float,
                 arm_values: dict[str, str]) -> dict[str, Any]:
    from guardian.engine.preflight import checkup
    from guardian.sources.prometheus import PrometheusSource

    return checkup(_rule_book(rules), PrometheusSource(prometheus_url), service, time.time(), window=window,
                   arm_values=arm_values)


def _doctor_from_settings(service: str, config: Path | None, source: str | None, url: str | None,
                          rules: list[Path] | None, window: float, arm_values: dict[str, str]) -> dict[str, Any]:
    """The stores `guardian serve` would read with these settings (each service's the one its rule file names)."""
    from guardian.api.components import metric_sources
    from guardian.engine.preflight import checkup
    from guardian.redact import install_log_redaction

    def with_url(name: str) -> dict[str, Any]:
        return {"source": source, **({"cloudwatch_endpoint_url" if name == "cloudwatch" else f"{name}_url": url}
                                     if url else {})}

    settings = load_settings_or_exit(config, **with_url(source or load_settings_or_exit(config).source))
    found: list[Path] | list[str] = rules or [r for r in settings.rules if r != "rules" or Path(r).exists()]
    book = _rule_book(found)
    named = book.for_service(service).rules.source  # --url is the address of the store the service is read from
    if url and named and named != (source or settings.source):
        settings = load_settings_or_exit(config, **with_url(named))
    install_log_redaction(settings)  # its secrets never reach a message (guardian/redact.py)
    try:
        stores = metric_sources(settings, book)
    except RuleError as e:  # a rule file naming a store the settings give no address
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None
    try:
        return checkup(book, stores, service, time.time(), window=window, arm_values=arm_values)
    finally:
        stores.close()


def load_settings_or_exit(config: Path | None, **overrides: Any) -> Any:
    from guardian.settings import load_settings

    try:
        return load_settings(config, **overrides)
    except RuleError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise typer.Exit(EXIT_ERROR) from None


def _print_doctor(report: dict[str, Any]) -> None:
    """A line per signal (a line per arm where the arms differ), its status coloured, then what to do."""
    arms = ", ".join(f"{a} {report['arm_label']}=\"{v}\"" for a, v in report["arms"].items()) or "none known"
    store = f" from {report['store']}" if report.get("store") else ""
    out.print(f"[bold]{esc(report['service'])}[/bold]: policy {esc(report['rules'])}; arms {esc(arms)}; "
              f"values over the last {report['window_seconds']:g} s{esc(store)}")
    for note in report.get("notes") or []:
        out.print(f"  [yellow]note[/yellow]: {esc(note)}")
    by_signal: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        by_signal.setdefault(f["signal"], []).append(f)
    if report["findings"] and all(f["status"] == "unavailable" for f in report["findings"]):  # said once
        style = STATUS_STYLE["unavailable"]
        out.print(f"  [bold]{', '.join(by_signal)}[/bold] (every arm): [{style}]unavailable[/{style}] — "
                  f"{esc(report['findings'][0]['detail'])}")
        by_signal = {}
    for signal, found in by_signal.items():
        same = len({(f["status"], f["detail"]) for f in found}) == 1
        groups = [found] if same else [[f] for f in found]
        for group in groups:
            f = group[0]
            style = STATUS_STYLE.get(f["status"], "")
            shown = f["status"] + (" (blocks)" if f["blocking"] else "" if f["gating"] else ", optional")
            who = " and ".join(g["arm"] for g in group)
            out.print(f"  [bold]{signal}[/bold] ({who}): [{style}]{shown}[/{style}] — {esc(f['detail'])} "
                      f"[dim](read by {', '.join(f['checks'])})[/dim]")
    blocking = list(dict.fromkeys(f["signal"] for f in report["findings"] if f["blocking"]))
    unasked = list(dict.fromkeys(f["signal"] for f in report["findings"] if f["status"] == "unavailable"
                                 and f["gating"]))
    unchecked = list(dict.fromkeys(f"{f['signal']} ({f['arm']})" for f in report["findings"]
                                   if f["status"] == "unchecked" and f["gating"]))
    if unasked:
        out.print(f"[red]the store could not be asked about {', '.join(unasked)}[/red], which a check needs (see "
                  "above why): nothing is known of them, and a rollout's ticks would pause on it (exit 2)")
    if blocking:
        out.print(f"[red]no data for {', '.join(blocking)}[/red], which a check needs: a rollout of "
                  f"{esc(report['service'])} would be refused (or start paused with --allow-missing) until it has")
    elif not unasked and unchecked:
        out.print(f"[yellow]every signal checked is there[/yellow]; not checked: {', '.join(unchecked)} (name the "
                  "arm's label value with --canary / --baseline)")
    elif not unasked:
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
    approval = status.approval_text(r)
    out.print(f"{r['id']} {r['service']} → {r['image']}: {status.phase_text(r)}, {status.step_text(r)}"
              + (f", {approval}" if approval else f", {status.seconds(r['time_left_in_step'])} left in step"
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
    from guardian.reporting.explain import render_text

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
    from guardian.reporting.report import render

    if output.suffix.lower() not in (".png", ".html", ".htm"):
        raise fail(f"--output {output}: write the report as FILE.png or FILE.html")
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


INTENT_WAIT_SECONDS = 30.0  # how long a command filed for another replica is followed before the CLI gives up


def _follow_intent(api: str, token: str | None, filed: dict[str, Any]) -> dict[str, Any]:
    """A command the receiving replica filed for the one holding the rollout (HTTP 202): wait until that one has
    carried it out, then the rollout as it is. Refused (409's case) and failed (502's) exit 2 with the reason."""
    intent = filed["intent"]
    held = f"the watch of rollout {intent['starts']}'s service" if intent.get("starts") else \
        f"rollout {intent['rollout_id']}"
    err.print(f"{held} is held by another replica: {intent['action']} filed as intent {intent['id']}, waiting for "
              "it to be carried out …", markup=False)
    deadline = time.monotonic() + INTENT_WAIT_SECONDS
    while intent["status"] not in ("done", "refused", "failed") and time.monotonic() < deadline:
        intent = _call(api, token, "GET", f"/v1/intents/{intent['id']}",
                       params={"wait": min(10.0, max(0.0, deadline - time.monotonic()))})
    if intent["status"] == "refused":
        raise fail(f"{intent['action']} refused by replica {intent['done_by']}: {intent['detail']}")
    if intent["status"] == "failed":
        raise fail(f"{intent['action']} failed on replica {intent['done_by']} (nothing changed): {intent['detail']}")
    if intent["status"] != "done":
        raise fail(f"intent {intent['id']} is still {intent['status']} after {INTENT_WAIT_SECONDS:g} s: the replica "
                   f"holding rollout {intent['rollout_id']} has not carried it out yet; follow it with "
                   f"GET {api}/v1/intents/{intent['id']}")
    err.print(f"carried out by replica {intent['done_by']}", markup=False)
    return _call(api, token, "GET", intent["links"]["rollout"])


def _override(action: str):
    def command(rollout_id: IdArg, api: ApiOpt = "http://127.0.0.1:8080", token: TokenOpt = None) -> None:
        r = _call(api, token, "POST", f"/v1/rollouts/{rollout_id}/{action}")
        if r.get("status") == "accepted" and "intent" in r:
            r = _follow_intent(api, token, r)
        _print_state(r)

    command.__doc__ = {
        "pause": "Hold the rollout where it is (the guardian keeps watching, but does not act).",
        "resume": "Resume a paused rollout.",
        "promote": "Make the new version stable now, skipping the remaining steps.",
        "rollback": "Send all traffic back to the stable version now.",
        "approve": "Approve a rollout that waits for a human go at a step (`--steps 10,25,approve,50,100`, or the "
                   "rule file's `approve_before: promote`); it goes on at its next tick if its checks still pass.",
    }[action]
    return command


for _action in ("pause", "resume", "promote", "rollback", "approve"):
    rollout_app.command(_action)(_override(_action))

