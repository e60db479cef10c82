"""The web UI on a real `guardian serve` (a subprocess) judging a real rollout: real demo apps under load, a real
Prometheus (1 s scrape), 2 s ticks, in Debian's Chromium (headless, Selenium). The rollout waits for approval at
50%; the list follows it live, the operator approves it from its page, and it is promoted."""
from __future__ import annotations

import json
import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from demo.loadgen import LoadGenerator
from demo.stack import GuardianServer, PrometheusServer, start_demo_pair, wait_until
from tests.integration.conftest import prometheus_binary
from tests.integration.test_web_ui import SHOTS

pytestmark = pytest.mark.integration
OPERATOR, ALICE = "operator-token-1", "alice-secret-1"


@pytest.fixture
def live(tmp_path):
    prometheus_binary()
    started = []
    try:
        baseline, canary = start_demo_pair(started)
        (tmp_path / "prometheus").mkdir()
        prom = PrometheusServer([(baseline.target, {"service": "checkout", "track": "baseline"}),
                                 (canary.target, {"service": "checkout", "track": "canary"})], "1s",
                                workdir=tmp_path / "prometheus").start()
        started.append(prom)
        load = LoadGenerator({baseline.url: 1, canary.url: 1}, rps=30, max_seconds=300).start()
        started.append(load)
        prom.wait_for_series('http_requests_total{service="checkout",track="canary"}')
        (tmp_path / "guardian").mkdir()
        guardian = GuardianServer(tmp_path / "guardian", prometheus_url=prom.url, rules=[], tick_seconds=2,
                                  evaluation_delay=1, min_window=4, analysis_seconds=6, token=OPERATOR,
                                  operator_tokens=json.dumps({"alice": ALICE})).start()
        started.append(guardian)
        yield guardian
    finally:
        for thing in reversed(started):
            thing.stop()


def test_a_real_rollout_followed_live_and_approved_from_the_page(live):
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    try:
        d.get(live.url + "/ui")
        d.find_element(By.ID, "token").send_keys(ALICE)
        d.find_element(By.ID, "login").click()
        wait_until(lambda: "/ui/login" not in d.current_url, 10, 0.1, "the login")
        r = live.api("POST", "/v1/rollouts", headers={"Authorization": f"Bearer {OPERATOR}"},
                     json={"service": "checkout", "image": "demo:v2", "steps": [50, "approve", 100], "target": "noop"})
        assert r.status_code == 201, r.text + live.log_tail()
        rid = r.json()["id"]
        row = f'#rollouts tr[data-id="{rid}"]'
        wait_until(lambda: "waiting for approval" in d.find_element(By.CSS_SELECTOR, row).text, 60, 0.2,
                   "the list showing the wait for approval")
        d.find_element(By.CSS_SELECTOR, f"{row} a").click()
        approve = wait_until(lambda: (b := d.find_element(By.ID, "do-approve")).is_displayed() and b, 10, 0.1,
                             "the approve button")
        wait_until(lambda: len(d.find_elements(By.CSS_SELECTOR, "#plots .plot canvas")) >= 3, 10, 0.1, "plots")
        SHOTS.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(SHOTS / "live-approval.png"))
        approve.click()
        d.switch_to.alert.accept()
        wait_until(lambda: "promoted" in d.find_element(By.ID, "summary").text, 60, 0.2, "the promotion")
        decisions = live.api("GET", f"/v1/rollouts/{rid}").json()["decisions"]
        actions = [(x["action"], x.get("by")) for x in decisions if x["action"] != "continue"]
        assert ("approval", None) in actions and ("approve", "alice") in actions and actions[-1][0] == "promote"
    finally:
        d.quit()
