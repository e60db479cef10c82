"""The steady-state guard on the demo's stack: a ×3 traffic surge met by a scale-out, and a scale-in once it
subsides (docs/rules.md, "Watch: guarding between rollouts").

    from demo.steady import run_surge
    figures = run_surge(guarded)      # a started GuardedStack (demo/dockerstack.py), its 50 req/s load running

`run_surge` writes a rule file with a `watch:` section for the stack's service into the guardian's rules folder
(the guardian reloads it and starts a watch), and the service's forecast model beside it; waits until the watch
has judged normal traffic; adds `extra_rps` (default 2 × the normal rate: ×3 in all) through nginx for
`surge_seconds`; and prints what the guardian did: the scale-out after the forecast check's three anomalous
10 s periods (+1 replica through the docker actuator's SCALE), and the scale-in `scale_in_after` after the
traffic is back on its forecast. About 100 s. `benchmarks/steady_state.py` measures the same, `--runs` times.

The forecast model is fitted by the real fitting code (guardian/forecast/fitting.py) on a synthetic history, and
said so in its `source`: three days of the load generator's normal rate at 10 s resolution, Poisson arrivals at
`rps` requests/s (real clients' noise; the demo's paced load generator is steadier than that, so the model is
wider than it needs to be, never narrower), one season per day, fitted up to the moment it is written.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import numpy as np

from demo.loadgen import LoadGenerator
from demo.stack import wait_until
from guardian.actuators.containers import SERVICE_LABEL
from guardian.forecast.fitting import fit
from guardian.forecast.history import FORECAST_SIGNALS
from guardian.forecast.model import DAY, SeasonalModel
from guardian.forecast.model_files import write_model

CHECK = "traffic-forecast"
SIGNAL = "requests"


@dataclass(frozen=True)
class WatchRules:
    """The watch the surge runs under: a forecast check on `requests` that scales out by one after
    `consecutive` periods of `period` seconds beyond `sigma`σ above the forecast, and the `watch:` section."""

    period: float = 10.0
    consecutive: int = 3
    sigma: float = 3.0
    cusum: bool = False  # the check's CUSUM (on by default in rule files): see benchmarks/steady_state.py --cusum
    min_replicas: int = 2
    max_replicas: int = 4
    scale_in_after: float = 20.0
    cooldown: float = 40.0

    def text(self, service: str, model: str | None = None) -> str:
        model_line = f", model: {model}" if model else ""
        return (f"# written by demo/steady.py: {service} is watched between rollouts (docs/rules.md, \"Watch\")\n"
                f"service: {service}\n"
                "checks:\n"
                f"  - {{name: {CHECK}, kind: baseline, signal: {SIGNAL}, direction: above, "
                f"consecutive: {self.consecutive}, sigma: {self.sigma:g}, period: {self.period:g}s, "
                f"cusum: {str(self.cusum).lower()}, action: scale, replicas: 1{model_line}}}\n"
                "watch:\n"
                f"  min_replicas: {self.min_replicas}\n"
                f"  max_replicas: {self.max_replicas}\n"
                f"  scale_in_after: {self.scale_in_after:g}s\n"
                f"  cooldown: {self.cooldown:g}s\n")


# -- the model ----------------------------------------------------------------------------------------------
def normal_history(rps: float, end: float, *, days: int = 3, step: float = 10.0, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """`days` of the normal rate before `end`, one value per `step` seconds: the mean rate of Poisson arrivals
    at `rps` requests/s over each step."""
    rng = np.random.default_rng(seed)
    last = np.floor(end / step) * step
    ts = last - step * np.arange(round(days * DAY / step))[::-1]
    return ts, rng.poisson(rps * step, ts.size) / step


def fit_normal_model(service: str, rps: float, end: float, *, step: float = 10.0, days: int = 3,
                     seed: int = 0) -> SeasonalModel:
    """The forecast of `requests` for `service`, fitted (guardian.forecast.fitting.fit, the options `guardian
    baseline fit` uses for requests) on `normal_history`: a daily period of `step`-second buckets, the level
    and σ of the normal rate. σ is the forecast error's spread over the whole day (scale_mode global): the
    traffic has no daily shape to give each bucket its own."""
    ts, values = normal_history(rps, end, days=days, step=step, seed=seed)
    spec = FORECAST_SIGNALS[SIGNAL]
    return fit(ts, values, period=DAY, step=step, seasons=days, end=float(ts[-1]), scale_mode="global",
               floor_fraction=spec.floor_fraction, min_sigma=spec.min_sigma, service=service, signal=SIGNAL,
               source={"unit": spec.unit, "models": spec.models, "signal_type": spec.source_type.value,
                       "transform": spec.transform,
                       "history": f"synthetic (demo/steady.py): {days} days of Poisson arrivals at {rps:g} "
                                  f"requests/s, one value per {step:g} s, seed {seed}; not read from Prometheus"})


def install(rules_dir: str | Path, service: str, rps: float, *, rules: WatchRules = WatchRules(),
            models_dir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Write the service's forecast model and its rule file with a `watch:` section (the guardian reloads its
    rules folder and starts the watch). The model goes to `models_dir/<service>/requests.json` (the settings'
    models_dir, where `guardian baseline fit` writes it) when given, else beside the rule file, named by the
    check's `model:`. Returns the paths and the model's level and σ."""
    rules_dir = Path(rules_dir)
    rules_dir.mkdir(parents=True, exist_ok=True)
    model = fit_normal_model(service, rps, time.time(), step=rules.period, seed=seed)
    path = write_model(model, rules_dir / "models" if models_dir is None else models_dir)
    named = str(path.relative_to(rules_dir)) if models_dir is None else None
    rule_file = rules_dir / f"{service}.yaml"
    rule_file.write_text(rules.text(service, named))
    centre, sigma = model.forecast(time.time())
    return {"rule_file": str(rule_file), "model": str(path), "level": centre, "sigma": sigma,
            "limit": centre + rules.sigma * sigma}


# -- the guardian's side ------------------------------------------------------------------------------------
def watch_of(guardian: Any, service: str) -> dict[str, Any] | None:
    """The service's watch in flight (GET /v1/rollouts?active=true), with its decisions and latest tick."""
    rows = guardian.api("GET", "/v1/rollouts", params={"service": service, "active": "true"}).raise_for_status()
    for row in rows.json():
        if row.get("strategy") == "watch":
            return guardian.rollout(row["id"])
    return None


def forecast_verdict(watch: dict[str, Any]) -> dict[str, Any] | None:
    return next((v for v in watch.get("verdicts") or [] if v.get("check") == CHECK), None)


def wait_for_watch(guardian: Any, service: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """The watch once its forecast check has judged a complete period of normal traffic (passing)."""
    def judged() -> dict[str, Any] | None:
        w = watch_of(guardian, service)
        v = w and forecast_verdict(w)
        return w if v and not v.get("abstained") and v.get("result") == "pass" else None

    return wait_until(judged, timeout, 0.5, f"a watch of {service} judging normal traffic")


# -- the replicas, seen from outside ------------------------------------------------------------------------
@dataclass
class SeenReplica:
    name: str
    address: str | None
    seen_at: float  # wall time it was first listed running
    serving_at: float | None = None  # its first request served (its own /metrics)
    gone_at: float | None = None  # no longer running


@dataclass
class ReplicaWatcher:
    """Polls the service's running containers (every `interval` s) and each new one's /metrics: when it appears,
    when it served its first request, when it is gone. Wall times."""

    service: str
    interval: float = 0.2
    replicas: dict[str, SeenReplica] = field(default_factory=dict)
    initial: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.client = docker.from_env()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-watcher", daemon=True)

    def start(self) -> ReplicaWatcher:
        self._poll()
        self.initial = set(self.replicas)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()

    def running(self) -> list[str]:
        return sorted(r.name for r in self.replicas.values() if r.gone_at is None)

    def added(self) -> list[SeenReplica]:
        return [r for name, r in self.replicas.items() if name not in self.initial]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # the daemon busy for a moment: the next poll sees it
                self._poll()

    def _poll(self) -> None:
        now = time.time()
        found = {}
        for c in self.client.containers.list(filters={"label": f"{SERVICE_LABEL}={self.service}", "status": "running"}):
            ports = (c.attrs.get("NetworkSettings") or {}).get("Ports") or {}
            binding = next(iter(ports.get("8000/tcp") or []), None)
            found[c.name] = f"127.0.0.1:{binding['HostPort']}" if binding else None
        for name, address in found.items():
            if name not in self.replicas:
                self.replicas[name] = SeenReplica(name, address, now)
        for r in self.replicas.values():
            if r.gone_at is None and r.name not in found:
                r.gone_at = now
            if r.name in found and r.serving_at is None and r.name not in self.initial and r.address:
                with contextlib.suppress(httpx.HTTPError):
                    if served(httpx.get(f"http://{r.address}/metrics", timeout=1).text) > 0:
                        r.serving_at = time.time()


def served(metrics_text: str) -> float:
    """Requests a demo app has served, from its /metrics (http_requests_total, every code)."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("http_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- the load -----------------------------------------------------------------------------------------------
class FailureLog:
    """Wraps a LoadGenerator's HTTP client to note why each request got no answer (wall time, the exception's
    type): a refused or reset connection tells a routing change from a client too busy to read in time."""

    def __init__(self, load: LoadGenerator):
        self.load, self.client, self.errors = load, load._client, []
        load._client = self

    def undo(self) -> None:
        self.load._client = self.client

    def get(self, *args: Any, **kw: Any) -> Any:
        try:
            return self.client.get(*args, **kw)
        except httpx.HTTPError as e:
            self.errors.append((time.time(), type(e).__name__))
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def failures(loads: list[LoadGenerator], windows: list[tuple[float, float]]) -> dict[str, int]:
    """Requests answered (or given up on) within any of the windows (wall times), over every load generator:
    total, failed (an answer that is not 2xx) and dropped (no answer at all)."""
    out = {"requests": 0, "failed": 0, "dropped": 0}
    for load in loads:
        for t, _version, status in list(load.answers or []):
            if any(start <= load.wall(t) <= end for start, end in windows):
                out["requests"] += 1
                if status is None:
                    out["dropped"] += 1
                elif not 200 <= status < 300:
                    out["failed"] += 1
    return out


# -- the surge ----------------------------------------------------------------------------------------------
def watch_decisions(watch: dict[str, Any]) -> list[dict[str, Any]]:
    """The watch's decisions but its ticks' CONTINUEs: start, scale, notify …"""
    return [d for d in watch.get("decisions") or [] if d.get("action") != "continue"]


def surge(guardian: Any, url: str, service: str, base: LoadGenerator, *, extra_rps: float = 100.0,
          surge_seconds: float = 45.0, timeout: float = 240.0, delay: float = 0.0,
          say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Run one surge against a watch in flight: `extra_rps` more through `url` for `surge_seconds`, then wait
    for the scale-in. The surge begins `delay` s after the watch has judged a period of normal traffic (where in
    its period the surge begins decides whether that period already counts). Returns the figures (wall times
    are Unix seconds)."""
    watch = wait_for_watch(guardian, service)
    time.sleep(delay)
    before = len(watch_decisions(watch))
    logs = [FailureLog(base)]
    replicas = ReplicaWatcher(service).start()
    added: list[SeenReplica] = []
    try:
        say(f"watch {watch['id']} judges {service} ({len(replicas.running())} replicas); surge: +{extra_rps:g} "
            f"requests/s through nginx for {surge_seconds:g} s")
        extra = LoadGenerator([url], rps=extra_rps, keepalive=False, max_seconds=surge_seconds, record=True,
                              workers=16)
        logs.append(FailureLog(extra))
        surge_start = time.time()
        extra.start()
        extra.join(surge_seconds + 10)
        surge_end = time.time()
        extra.stop()
        say(f"surge over after {surge_end - surge_start:.0f} s; waiting for the scale-in")

        def scaled_in() -> dict[str, Any] | None:  # every replica the watch added taken back
            w = guardian.rollout(watch["id"])
            mine = watch_decisions(w)[before:]
            ins = [d for d in mine if d["action"] == "scale" and (d.get("replicas") or 0) < 0
                   and (d.get("outcome") or {}).get("ok")]
            return w if ins and not w.get("scaled_replicas") else None

        with contextlib.suppress(TimeoutError):
            wait_until(scaled_in, timeout, 0.5, "the watch's scale-in")
        time.sleep(3)  # let the scale-in's removal be seen, and a few answers after it
        watch = guardian.rollout(watch["id"])
        added = replicas.added()
    finally:
        replicas.stop()
        for log in logs:
            log.undo()
    mine = watch_decisions(watch)[before:]
    outs = [d for d in mine if d["action"] == "scale" and (d.get("replicas") or 0) > 0]
    ins = [d for d in mine if d["action"] == "scale" and (d.get("replicas") or 0) < 0]
    out, back = (outs[0] if outs else None), (ins[0] if ins else None)
    seen = list(replicas.replicas.values())

    def joined(d: dict[str, Any]) -> float | None:  # the replica a scale-out started: serving since
        return min((r.serving_at for r in added if r.seen_at >= d["at"] - 1.0 and r.serving_at), default=None)

    def left(d: dict[str, Any]) -> float | None:  # the replica a scale-in took out: gone since
        return min((r.gone_at for r in seen if r.gone_at is not None and r.gone_at >= d["at"]), default=None)

    serving = joined(out) if out else None
    removed_at = left(back) if back else None
    loads = [base, extra]
    figures: dict[str, Any] = {
        "watch": watch["id"], "surge_start": surge_start, "surge_end": surge_end, "delay_s": round(delay, 2),
        "surge_rps": base.rps + extra_rps, "normal_rps": base.rps, "skipped": extra.skipped,
        "scale_out_decided_s": _after(out, surge_start), "scale_out_ok": bool(out and (out.get("outcome") or {})
                                                                               .get("ok")),
        "new_replica_serving_s": None if serving is None else round(serving - surge_start, 1),
        "scale_in_decided_s": _after(back, surge_end), "scale_in_ok": bool(back and (back.get("outcome") or {})
                                                                            .get("ok")),
        "all_scaled_in_s": _after(ins[-1] if ins and not watch.get("scaled_replicas") else None, surge_end),
        "replica_removed_s": None if removed_at is None else round(removed_at - surge_end, 1),
        "scale_outs": len(outs), "scale_ins": len(ins), "replicas_after": watch.get("replicas"),
        "decisions": [{"at": round(d["at"], 1), "action": d["action"], "replicas": d.get("replicas", 0),
                       "ok": (d.get("outcome") or {}).get("ok"), "reason": d.get("reason", "")} for d in mine],
    }
    # each scaling's window: from its decision until 5 s after its replica serves (out) or is gone (in)
    if outs:
        figures["during_scale_out"] = failures(loads, [(d["at"], (joined(d) or d["at"]) + 5.0) for d in outs])
    if ins:
        figures["during_scale_in"] = failures(loads, [(d["at"], (left(d) or d["at"]) + 5.0) for d in ins])
    figures["whole_run"] = failures(loads, [(surge_start - 5.0, time.time())])
    figures["not_ok_at_s"] = sorted(  # when each failed or dropped request was answered (or given up), seconds
        round(load.wall(t) - surge_start, 1) for load in loads for t, _v, status in list(load.answers or [])
        if load.wall(t) >= surge_start - 5.0 and (status is None or not 200 <= status < 300))
    figures["no_answer"] = sorted((round(t - surge_start, 1), why) for log in logs for t, why in log.errors
                                  if t >= surge_start - 5.0)
    return figures


def _after(decision: dict[str, Any] | None, since: float) -> float | None:
    return None if decision is None else round(decision["at"] - since, 1)


def short(reason: str, limit: int = 150) -> str:
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def run_surge(guarded: Any, *, extra_rps: float | None = None, surge_seconds: float = 45.0,
              rules: WatchRules = WatchRules(), say: Callable[[str], None] = print) -> dict[str, Any]:
    """The demo's steady-state act, on a started GuardedStack whose load is still running (call it before
    `guarded.load.stop()`): watch its service, surge ×3, print the scale-out and the scale-in. Returns the
    figures (`surge`'s) with "ok": scaled out and back in, no request failed or unanswered during either."""
    service, guardian, load = guarded.service, guarded.guardian, guarded.load
    extra_rps = 2 * load.rps if extra_rps is None else extra_rps
    began = time.monotonic()
    info = install(guarded.workdir / "rules", service, load.rps, rules=rules)
    say(f"    {Path(info['rule_file']).name}: {service} watched between rollouts ({rules.min_replicas}.."
        f"{rules.max_replicas} replicas); +1 replica after {rules.consecutive} periods of {rules.period:g} s above "
        f"{info['limit']:.1f} req/s (forecast {info['level']:.1f} + {rules.sigma:g}σ, fitted on a synthetic "
        f"history of the normal {load.rps:g} req/s), -1 once back on the forecast for {rules.scale_in_after:g} s")
    figures = surge(guardian, guarded.stack.url, service, load, extra_rps=extra_rps, surge_seconds=surge_seconds,
                    say=lambda text: say("    " + text))
    for d in figures["decisions"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(d["at"]))
        say(f"    {stamp} {d['action']:<6} {short(d['reason'])}")
    out, scale_in = figures.get("during_scale_out") or {}, figures.get("during_scale_in") or {}
    say(f"    surge start -> scale-out decided {figures['scale_out_decided_s']} s, new replica serving "
        f"{figures['new_replica_serving_s']} s; surge end -> scale-in decided {figures['scale_in_decided_s']} s")
    say(f"    failed requests: {out.get('failed', '-')} failed + {out.get('dropped', '-')} dropped of "
        f"{out.get('requests', '-')} during the scale-out, {scale_in.get('failed', '-')} + "
        f"{scale_in.get('dropped', '-')} of {scale_in.get('requests', '-')} during the scale-in (while the "
        "replica starts, joins nginx, leaves it and stops)")
    whole = figures["whole_run"]
    if whole["failed"] or whole["dropped"]:
        say(f"    over the whole act: {whole['failed']} failed + {whole['dropped']} dropped of {whole['requests']} "
            f"(no answer: {', '.join(sorted({why for _, why in figures['no_answer']})) or '-'})")
    figures["ok"] = (figures["scale_out_ok"] and figures["scale_in_ok"] and not out.get("failed")
                     and not out.get("dropped") and not scale_in.get("failed") and not scale_in.get("dropped"))
    figures["seconds"] = round(time.monotonic() - began, 1)
    verdict = "passed" if figures["ok"] else "did NOT end as expected"
    say(f"    steady-state act {verdict} in {figures['seconds']:.0f} s")
    return figures


__all__ = ["CHECK", "ReplicaWatcher", "WatchRules", "failures", "fit_normal_model", "install", "normal_history",
           "run_surge", "surge", "wait_for_watch", "watch_of"]
