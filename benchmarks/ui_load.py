"""The web UI's speed in a real browser, and notifications sent per second.

    .venv/bin/python benchmarks/ui_load.py [--rollouts 500] [--ticks 1000] [--runs 5] [--notifications 2000]

Builds the real app on a SQLite store with ROLLOUTS rollouts (each of its own service, a few ticks each) and one
rollout of TICKS ticks, all moved by the real guard (a recording as the metric source, a fake clock), serves it
with uvicorn on loopback and measures, in Debian's Chromium (headless, Selenium):
- the rollouts list: from navigation start until its table holds every row (the first poll answered);
- the rollout page of TICKS ticks: until its plots are drawn and its checks listed;
- a decision's delay: from the guard's decision (a tick that advances the rollout) until the open page shows it
  (the page polls every 2 s: the expected delay is about 1 s, at most 2 s plus a fetch).
Then the notifications: a webhook (CloudEvents) route to a loopback receiver, NOTIFICATIONS decision events queued
at once; the time until the receiver has them all, and how many arrived (none may be lost).
Prints medians over RUNS page loads, and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from guardian.api.app import create_app  # noqa: E402
from guardian.api.components import build  # noqa: E402
from guardian.clock import FakeClock  # noqa: E402
from guardian.domain import Action  # noqa: E402
from guardian.engine.start import start_spec  # noqa: E402
from guardian.metrics import GuardianMetrics  # noqa: E402
from guardian.notifiers.channels import ChannelNotifier  # noqa: E402
from guardian.notifiers.routes import NotifyRoute  # noqa: E402
from guardian.settings import Settings  # noqa: E402
from guardian.sources.recording import RecordingSource  # noqa: E402
from tests.stubs.chat_stub import ChatStub  # noqa: E402
from tests.unit.recordings import steady_recording  # noqa: E402

TOKEN = "bench-operator-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser() -> webdriver.Chrome:
    o = Options()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", "--disable-gpu"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def wait(d: webdriver.Chrome, js: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not d.execute_script(js):
        if time.monotonic() > deadline:
            raise TimeoutError(js)
        time.sleep(0.01)


def page_ms(d: webdriver.Chrome, url: str, ready_js: str) -> float:
    """Navigation start until `ready_js` holds, in ms, by the page's own clock (performance.now())."""
    d.get(url)
    wait(d, ready_js)
    return float(d.execute_script("return performance.now()"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", type=int, default=500)
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--notifications", type=int, default=2000)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="guardian-ui-bench-"))
    clock = FakeClock()
    settings = Settings(db_path=str(tmp / "g.db"), rules=[str(REPO / "rules")], recordings_dir="", token=TOKEN)
    long = steady_recording(args.ticks + 40)
    c = build(settings, source=RecordingSource(long), clock=clock)
    t0 = time.monotonic()
    big = c.guard.start(start_spec(settings, service="checkout", image="shop/checkout:v2", steps=[10, 100],
                                   analysis_seconds=1e6))  # judged for all its ticks at 10%
    for _ in range(args.ticks):
        clock.advance(10)
        c.guard.tick(big.id)
    for i in range(args.rollouts - 1):
        s = c.guard.start(start_spec(settings, service=f"svc-{i:03d}", image=f"shop/svc-{i:03d}:v{i % 7}",
                                     steps=[25, 50, 100], analysis_seconds=60))
        if i % 9 == 0:
            c.guard.override(s.id, Action.PAUSE)  # a mix of phases
    print(f"built {args.rollouts} rollouts, one of {args.ticks} ticks, in {time.monotonic() - t0:.0f} s", flush=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(c, run_scheduler=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    d = browser()
    try:
        d.get(url + "/ui/login")
        d.find_element(By.ID, "token").send_keys(TOKEN)
        d.find_element(By.ID, "login").click()
        wait(d, "return !location.pathname.startsWith('/ui/login')")
        n = min(args.rollouts, 500)
        lists = [page_ms(d, url + "/ui", f"return document.querySelectorAll('#rollouts tbody tr').length >= {n}")
                 for _ in range(args.runs)]
        ready = ("return document.querySelectorAll('#plots .plot canvas').length >= 4 && "
                 "document.querySelectorAll('#checks tbody tr').length >= 1")
        pages = [page_ms(d, url + f"/ui/rollouts/{big.id}", ready) for _ in range(args.runs)]
        delays = []
        for i in range(args.runs):  # a decision -> the open page shows it
            s = c.guard.start(start_spec(settings, service=f"delay-{i}", image="shop/d:v2", steps=[25, 50, 100],
                                         analysis_seconds=10))
            d.get(url + f"/ui/rollouts/{s.id}")
            wait(d, "return document.getElementById('summary').textContent.includes('weight 25%')")
            time.sleep((0.37 * i) % 2)  # decisions at different points of the page's 2 s poll
            for _ in range(20):  # tick until the guard advances it: that decision is what the page must show
                clock.advance(10)
                c.guard.tick(s.id)
                if c.store.get(s.id).weight == 50:
                    break
            decided = time.monotonic()
            wait(d, "return document.getElementById('summary').textContent.includes('weight 50%')", 10)
            delays.append((time.monotonic() - decided) * 1000)
    finally:
        d.quit()
        server.should_exit = True
    # notifications
    stub = ChatStub()
    n = ChannelNotifier([NotifyRoute(channel="webhook", url=f"{stub.url}/hooks/bench")],
                        metrics=GuardianMetrics(), outbox_options={"max_queue": args.notifications + 10})
    event = {"rollout_id": "r", "service": "checkout", "image": "c:v2", "phase": "rolled_back", "action": "rollback",
             "reason": "bench", "verdicts": [], "at": 0.0}
    start = time.monotonic()
    for i in range(args.notifications):
        n.notify({**event, "rollout_id": f"r{i}"})
    n.flush(600)
    took = time.monotonic() - start
    received = len(stub.received)
    n.close()
    stub.close()
    out = {"benchmark": "ui_load", "rollouts": args.rollouts, "ticks": args.ticks, "runs": args.runs,
           "list_ms_median": round(statistics.median(lists)), "list_ms": [round(x) for x in lists],
           "rollout_page_ms_median": round(statistics.median(pages)), "rollout_page_ms": [round(x) for x in pages],
           "decision_to_page_ms_median": round(statistics.median(delays)),
           "decision_to_page_ms": [round(x) for x in delays],
           "notifications": args.notifications, "notifications_received": received,
           "notifications_per_second": round(args.notifications / took, 1)}
    print(f"rollouts list ({args.rollouts} rollouts): median {out['list_ms_median']} ms {out['list_ms']}")
    print(f"rollout page ({args.ticks} ticks): median {out['rollout_page_ms_median']} ms {out['rollout_page_ms']}")
    print(f"decision -> page: median {out['decision_to_page_ms_median']} ms {out['decision_to_page_ms']}")
    print(f"notifications: {received} of {args.notifications} received, {out['notifications_per_second']}/s")
    print(json.dumps(out))
    return 0 if received == args.notifications else 1


if __name__ == "__main__":
    sys.exit(main())
