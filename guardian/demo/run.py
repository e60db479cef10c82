"""The demo: a guarded rollout, end to end, on embedded defaults.

It starts a stable `checkout` service (v1), a Prometheus scraping it (1 s), a traffic router that
sends 40 requests/s and that the guardian steers through its webhook actuator, and the guardian
itself (2 s ticks). Then it rolls out v2, which answers 5xx to one request in five — the guardian
rolls it back — and v3, which is healthy — the guardian promotes it step by step. It prints what
happened and why, and leaves the recordings in var/demo/.

    bash scripts/demo.sh            (or: .venv/bin/python -m guardian.demo.run)
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from guardian.demo.loadgen import LoadGenerator
from guardian.demo.stack import DemoApp, GuardianServer, PrometheusServer

# The seed policy (error rate > 5% for 2 min, P99 > 1 s for 3 min), with durations shortened so the
# demo takes a minute or two instead of ten.
DEMO_RULES = """\
service: checkout
checks:
  - name: error-rate
    kind: threshold
    ratio: errors / requests
    above: 5%
    window: 10s
    for: 6s
    min_samples: 30
    action: rollback
  - name: p99-latency
    kind: threshold
    signal: p99_seconds
    above: 1s
    for: 10s
    min_samples: 20
    action: rollback
"""
STEPS = "10,25,50,100"


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def rollout(guardian: GuardianServer, control_port: int, image: str) -> tuple[int, dict]:
    """Run `guardian rollout start --wait` (its live progress goes to the console)."""
    cmd = [sys.executable, "-m", "guardian", "rollout", "start", "checkout", "--image", image, "--steps", STEPS,
           "--target", f"webhook+http://127.0.0.1:{control_port}/weights", "--wait", "--timeout", "240",
           "--api", guardian.url]
    print("$ guardian rollout start checkout --image", image, "--steps", STEPS,
          f"--target webhook+http://127.0.0.1:{control_port}/weights --wait", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="", flush=True)
    rollout_id = proc.stdout.split("started rollout ")[1].split()[0] if "started rollout " in proc.stdout else None
    state = guardian.rollout(rollout_id) if rollout_id else {}
    return proc.returncode, state


def explain(state: dict) -> None:
    print(f"    rollout {state['id']}: {state['image']} ended {state['phase']} at weight {state['weight']}%")
    for d in state["decisions"]:
        outcome = d.get("outcome") or {}
        print(f"    - {d['action']:<8} ({d['source']}) {d['reason'][:160]}"
              + ("" if outcome.get("ok", True) else f"  [FAILED: {outcome.get('detail')}]"))
    final = state["decisions"][-1]
    for v in final.get("verdicts", []):
        n = v.get("sample_size")
        value = "—" if v.get("value") is None else f"{v['value']:.4g}"
        print(f"      {v['check']}: {v['result']}, value {value} vs threshold {v['threshold']}, "
              f"samples {n:g}, statistic {v.get('statistic')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guardian.demo.run", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="var/demo", help="where logs, state and recordings go")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "prometheus").mkdir(parents=True)
    (work / "guardian").mkdir()
    (work / "rules").mkdir()
    (work / "rules" / "checkout.yaml").write_text(DEMO_RULES)
    began = time.monotonic()
    started: list = []
    try:
        say("starting checkout v1 (stable) and the canary slot with v2 (answers 5xx to 20% of requests)")
        stable = DemoApp("stable", version="v1", latency=0.02).start()
        started.append(stable)
        canary = DemoApp("canary", version="v2", latency=0.02, error_ratio=0.2).start()
        started.append(canary)
        say("starting Prometheus (scrapes every second; track=baseline / track=canary)")
        prom = PrometheusServer([(stable.target, {"service": "checkout", "track": "baseline"}),
                                 (canary.target, {"service": "checkout", "track": "canary"})],
                                "1s", workdir=work / "prometheus").start()
        started.append(prom)
        say("starting the traffic router: 40 requests/s, all to v1 until the guardian says otherwise")
        load = LoadGenerator({stable.url: 100, canary.url: 0}, rps=40, max_seconds=900).start()
        started.append(load)
        control_port = load.serve_control(0, canary=canary.url, baseline=stable.url)
        prom.wait_for_series('http_requests_total{service="checkout",track="baseline"}', timeout=30)
        say("starting the guardian (2 s ticks, 10 s of analysis per step)")
        guardian = GuardianServer(work / "guardian", prometheus_url=prom.url, rules=[str(work / "rules")],
                                  tick_seconds=2, evaluation_delay=1, min_window=4, analysis_seconds=10).start()
        started.append(guardian)
        print(f"    API: {guardian.url}/docs   Prometheus: {prom.url}   logs: {work}", flush=True)

        say("rolling out v2 (bad): canary steps " + STEPS)
        code_v2, v2 = rollout(guardian, control_port, "checkout:v2")
        explain(v2)

        say("deploying v3 (healthy) into the canary slot")
        canary.stop()
        canary = DemoApp("canary", version="v3", latency=0.02, port=canary.port).start()
        started.append(canary)
        say("rolling out v3 (good): canary steps " + STEPS)
        code_v3, v3 = rollout(guardian, control_port, "checkout:v3")
        explain(v3)

        stats = load.stats()
        say("summary")
        print(f"    v2: {v2.get('phase')} (exit {code_v2}, expected rolled_back / 1)")
        print(f"    v3: {v3.get('phase')} (exit {code_v3}, expected promoted / 0)")
        print(f"    traffic: {stats['ok']} ok, {stats['failed']} failed (the failures are v2's injected 5xx "
              "while it had canary traffic)")
        print(f"    recordings (guardian-recording/v1): {work / 'guardian' / 'recordings'}")
        print(f"    replay them: .venv/bin/guardian replay {work / 'guardian' / 'recordings'} "
              f"--rules {work / 'rules' / 'checkout.yaml'}")
        print(f"    demo took {time.monotonic() - began:.0f} s")
        ok = v2.get("phase") == "rolled_back" and v3.get("phase") == "promoted"
        say("demo " + ("passed" if ok else "did NOT end as expected"))
        return 0 if ok else 1
    finally:
        for thing in reversed(started):
            thing.stop()


if __name__ == "__main__":
    sys.exit(main())
