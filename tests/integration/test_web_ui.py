"""The web UI in a real browser: Debian's Chromium, headless, driven by Selenium (chromium-driver), against the real
app served by uvicorn on a loopback port, with real rollouts moved by the real guard (a recording as the metric
source and a fake clock, so each test decides when a tick happens). Screenshots of the main pages are written to
var/ui-screenshots/ (the README shows copies from docs/screenshots/)."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from guardian.api.app import create_app
from guardian.api.components import Components, build
from guardian.clock import FakeClock
from guardian.domain import Action, Decision
from guardian.engine.alerts import StoredAlert
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.fixtures.env import clean_guardian_env  # noqa: F401 - the fixture
from tests.unit.recordings import late_regression_recording

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "var" / "ui-screenshots"
OPERATOR, ALICE, VIEWER = "operator-token-1", "alice-secret-1", "viewer-secret-1"
XSS = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"
pytestmark = pytest.mark.usefixtures("clean_guardian_env")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guardian:
    """The real app on a loopback port; `tick` moves every rollout in flight by one tick of the fake clock."""

    def __init__(self, c: Components, clock: FakeClock, url: str) -> None:
        self.c, self.clock, self.url = c, clock, url
        self.api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10)

    def start(self, **body: Any) -> str:
        r = self.api.post("/v1/rollouts", json={"service": "checkout", "image": "shop/checkout:v2",
                                                "steps": [25, 50, 100], "analysis_seconds": 30, **body})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(10)
            for s in self.c.store.list(active_only=True):
                self.c.guard.tick(s.id)


@pytest.fixture
def guardian(tmp_path: Path) -> Iterator[Guardian]:
    port = _free_port()
    s = Settings(db_path=str(tmp_path / "g.db"), rules=[str(REPO / "rules")], recordings_dir="", token=OPERATOR,
                 operator_tokens={"alice": ALICE}, viewer_token=VIEWER)
    clock = FakeClock()
    c = build(s, source=RecordingSource(late_regression_recording(400, bad_from=200)), clock=clock)
    server = uvicorn.Server(uvicorn.Config(create_app(c, run_scheduler=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    g = Guardian(c, clock, f"http://127.0.0.1:{port}")
    yield g
    g.api.close()
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed (scripts/test.sh installs them)"
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-gpu"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=options)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def until(what: Callable[[], Any], timeout: float = 10.0, why: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = what()
            if last:
                return last
        except WebDriverException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out: {why} (last: {last!r})")


def login(d: webdriver.Chrome, g: Guardian, token: str, page: str = "/ui") -> None:
    d.get(g.url + page)
    assert "/ui/login" in d.current_url  # reading needs a login
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.ID, "login").click()
    until(lambda: "/ui/login" not in d.current_url, why="the login")


def shot(d: webdriver.Chrome, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(SHOTS / f"{name}.png"))


def row_text(d: webdriver.Chrome, rid: str) -> str:
    return d.find_element(By.CSS_SELECTOR, f'#rollouts tr[data-id="{rid}"]').text


def test_the_list_updates_while_a_rollout_advances_without_a_reload(guardian, browser):
    login(browser, guardian, VIEWER)
    rid = guardian.start()
    until(lambda: "25%" in row_text(browser, rid), why="the new rollout in the list")
    browser.execute_script("window.__same_page = 1")
    guardian.tick(4)
    until(lambda: "50%" in row_text(browser, rid), why="the list showing the advance")
    assert browser.execute_script("return window.__same_page") == 1  # no reload: the page updated itself
    assert "progressing" in row_text(browser, rid)
    shot(browser, "rollouts")
    browser.get(guardian.url + "/ui?phase=promoted")  # filters: none promoted yet
    until(lambda: "0 rollout(s)" in browser.find_element(By.ID, "count").text, why="the phase filter")
    browser.get(guardian.url + "/ui?strategy=canary&service=checkout")
    until(lambda: rid in browser.find_element(By.ID, "rollouts").text, why="the strategy and service filters")
    browser.get(guardian.url + "/ui?strategy=watch")
    until(lambda: "0 rollout(s)" in browser.find_element(By.ID, "count").text, why="no watch")


def test_a_rollout_page_shows_its_plots_and_evidence(guardian, browser):
    rid = guardian.start()
    guardian.tick(25)  # 25% -> 50% -> 100%, then the canary's errors from tick 200 are far away: still passing
    login(browser, guardian, VIEWER, f"/ui/rollouts/{rid}")
    until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#plots .plot canvas")) >= 4, why="the plots")
    signals = {e.get_attribute("data-plot") for e in browser.find_elements(By.CSS_SELECTOR, "#plots .plot")}
    assert {"s:requests", "s:errors", "s:p99_seconds", "c:error-rate"} <= signals
    checks = browser.find_element(By.ID, "checks").text
    assert "error-rate" in checks and "wilson_lower" in checks and "0.05" in checks
    decisions = browser.find_element(By.ID, "decisions").text
    assert "advance" in decisions and "start" in decisions and "by guardian" in decisions
    assert browser.find_element(By.ID, "do-rollback").get_attribute("hidden")  # a viewer sees no action
    shot(browser, "rollout")


def test_approve_and_roll_back_from_the_page_with_the_token_and_refused_without(guardian, browser):
    rid = guardian.start(steps=[25, "approve", 50, 100])
    guardian.tick(5)
    assert guardian.c.store.get(rid).awaiting_since is not None
    login(browser, guardian, VIEWER, f"/ui/rollouts/{rid}")
    until(lambda: "waiting for approval" in browser.find_element(By.ID, "summary").text, why="the wait shown")
    browser.set_script_timeout(10)
    refused = browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; RG.act(arguments[0], 'approve').then((r) => done(r.status));",
        rid)
    assert refused == 403  # a viewer's session may not act, even with the page's CSRF token
    browser.delete_all_cookies()

    login(browser, guardian, ALICE, f"/ui/rollouts/{rid}")
    no_csrf = browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; fetch('/ui/rollouts/' + arguments[0] + '/approve', "
        "{method: 'POST'}).then((r) => done(r.status));", rid)
    assert no_csrf == 403  # an action without the page's CSRF token is refused
    approve = until(lambda: (b := browser.find_element(By.ID, "do-approve")).is_displayed() and b, why="approve")
    shot(browser, "approval")
    approve.click()
    browser.switch_to.alert.accept()  # the confirmation
    until(lambda: "approve: done" in browser.find_element(By.ID, "action-result").text, why="the approval")
    decisions = guardian.api.get(f"/v1/rollouts/{rid}").json()["decisions"]
    assert [(d["action"], d.get("by")) for d in decisions if d["action"] == "approve"] == [("approve", "alice")]
    guardian.tick(1)
    until(lambda: "weight 50%" in browser.find_element(By.ID, "summary").text, why="the advance after approval")

    rollback = until(lambda: (b := browser.find_element(By.ID, "do-rollback")).is_displayed() and b, why="rollback")
    rollback.click()
    with pytest.raises(NoAlertPresentException):  # dismissing the confirmation does nothing
        browser.switch_to.alert.dismiss()
        browser.switch_to.alert.accept()
    assert guardian.c.store.get(rid).phase.value == "progressing"
    rollback.click()
    browser.switch_to.alert.accept()
    until(lambda: "rollback: done" in browser.find_element(By.ID, "action-result").text, why="the rollback")
    assert guardian.c.store.get(rid).phase.value == "rolled_back"
    until(lambda: "rollback by alice" in browser.find_element(By.ID, "decisions").text, why="who rolled back")


def test_payloads_in_an_image_a_reason_a_log_line_and_an_alert_stay_inert(guardian, browser):
    rid = guardian.start(image=f"shop/checkout:v2{XSS}")
    guardian.c.store.save_alerts([StoredAlert(
        fingerprint="f1", name=f"HighErrors{XSS}", status="firing", labels={"alertname": "HighErrors",
                                                                            "service": "checkout"},
        annotations={"summary": XSS}, starts_at=guardian.clock.now(), ends_at=None,
        received_at=guardian.clock.now())])
    guardian.tick(3)
    guardian.c.store.log_decision(rid, Decision(Action.NOTIFY, f"reason {XSS}", tick=3, at=guardian.clock.now(),
                                                logs=({"template": f"ERROR {XSS}", "canary_count": 5,
                                                       "baseline_count": 0},)), None, guardian.clock.now())
    login(browser, guardian, ALICE, f"/ui/rollouts/{rid}")
    until(lambda: XSS in browser.find_element(By.ID, "title").text, why="the image shown as text")
    until(lambda: f"ERROR {XSS}" in browser.find_element(By.ID, "decisions").text, why="the log line as text")
    until(lambda: "summary: " + XSS in browser.find_element(By.ID, "alerts").text, why="the alert shown as text")
    browser.get(guardian.url + "/ui")
    until(lambda: rid in browser.find_element(By.ID, "rollouts").text, why="the list")
    browser.get(guardian.url + "/ui/alerts")
    assert XSS in browser.find_element(By.ID, "alerts-table").text
    for _ in range(3):
        assert browser.execute_script("return window.__xss === undefined")
        time.sleep(0.2)
    shot(browser, "alerts")
    assert "Content-Security-Policy" in httpx.get(guardian.url + "/ui/login").headers
