"""The `guardian` command (SPEC.md §1, outside this repository): rules check, replay, the rollout commands and
their exit codes.

The rollout commands are run against the real app in process (the CLI's HTTP client is swapped for a
TestClient), so the CLI and the API are checked together without a server."""
from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from guardian.api.app import create_app
from guardian.api.components import Components, build
from guardian.cli import app
from guardian.cli import remote as cli
from guardian.clock import FakeClock
from guardian.errors import RuleError
from guardian.rules.loader import load_paths
from guardian.settings import Settings
from guardian.sources.recording import RecordingSource
from tests.unit.recordings import steady_recording

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TICKS = 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("GUARDIAN_"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def text(s: str) -> str:
    return ANSI.sub("", s)


def flat(s: str) -> str:
    """Help text without its box drawing and line wrapping."""
    return " ".join(text(s).replace("│", " ").split())


def recording(canary_errors: int = 30, ticks: int = TICKS) -> dict:
    return steady_recording(ticks, canary_errors=canary_errors, canary_p99=0.1, truth="bad")


# -- rules check ----------------------------------------------------------------------------------------
def test_rules_check_shipped_rules(runner):
    result = run(runner, "rules", "check", REPO / "rules")
    assert result.exit_code == 0, result.output
    assert "ok:" in result.stdout and "checkout" in result.stdout


BAD_RULES = """\
service: checkout
checks:
  - name: error-rate
    kind: threshold
    ratio: oops / requests
    above: 5%
    for: 2 minutes
    action: explode
"""


def test_rules_check_bad_file_prints_one_unwrapped_line_per_problem(runner, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_RULES, encoding="utf-8")
    with pytest.raises(RuleError) as err:
        load_paths([bad])
    expected = [str(p) for p in err.value.problems]
    assert len(expected) == 3
    assert any(len(line) > 120 for line in expected)  # long enough that a wrapping console would break it

    result = run(runner, "rules", "check", bad)
    assert result.exit_code == 2
    assert text(result.stdout).splitlines() == expected
    assert expected[0].startswith(f"{bad}:5: checks[0].ratio: unknown signal 'oops'")
    assert expected[1].startswith(f"{bad}:7: checks[0].for: bad duration")
    assert expected[2].startswith(f"{bad}:8: checks[0].action: ")


def test_rules_check_line_format(runner, tmp_path):
    bad = tmp_path / "r.yml"
    bad.write_text("service: x\nbogus: 1\n", encoding="utf-8")
    result = run(runner, "rules", "check", tmp_path)  # a folder: its *.yml files are checked
    assert result.exit_code == 2
    assert text(result.stdout).splitlines() == [f"{bad}:2: bogus: unknown field"]


def test_rules_check_reports_every_file(runner, tmp_path):
    (tmp_path / "a.yaml").write_text("service: a\nchecks: 5\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("service: b\nport: 1\n", encoding="utf-8")
    result = run(runner, "rules", "check", tmp_path)
    assert result.exit_code == 2
    lines = text(result.stdout).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{tmp_path / 'a.yaml'}:2", f"{tmp_path / 'b.yaml'}:2"]


def test_rules_check_missing_path(runner, tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run(runner, "rules", "check", missing)
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert "no such file" in result.stderr


def test_rules_check_missing_path_with_a_valid_one_still_fails(runner, tmp_path):
    result = run(runner, "rules", "check", REPO / "rules", tmp_path / "nope")
    assert result.exit_code == 2


def test_rules_check_without_paths_is_a_usage_error(runner):
    assert run(runner, "rules", "check").exit_code == 2


# -- replay -----------------------------------------------------------------------------------------------
def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def uneven() -> dict:
    doc = recording()
    doc["series"]["errors"]["canary"] = doc["series"]["errors"]["canary"][:-1]
    return doc


def non_numeric() -> dict:
    doc = recording()
    doc["series"]["requests"]["canary"][3] = "lots"
    return doc


INVALID = [
    ({**recording(), "format": "guardian-recording/v0"}, "format"),
    (uneven(), "series.errors.canary"),
    (non_numeric(), "series.requests.canary[3]"),
    ({**recording(), "step_seconds": 0}, "step_seconds"),
    ({**recording(), "start": "yesterday"}, "start"),
    ({**recording(), "series": {}}, "series"),
]


@pytest.mark.parametrize(("doc", "field"), INVALID,
                         ids=["wrong-format", "uneven-arrays", "non-numeric", "zero-step", "bad-start", "no-series"])
def test_replay_folder_with_a_valid_and_an_invalid_recording(runner, tmp_path, doc, field):
    write_json(tmp_path / "good.json", recording())
    write_json(tmp_path / "broken.json", doc)

    result = run(runner, "replay", tmp_path, "--json")

    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    line = json.loads(lines[0])
    assert set(line) == {"file", "decision", "tick", "reason"}
    assert line["file"] == "good.json"
    assert line["decision"] == "rollback"
    assert isinstance(line["tick"], int)
    # 30% canary errors against a 0.1% baseline: after the 30 s warm-up, the sequential test needs a few
    # ticks (one tick may multiply the evidence by at most 3) to reach its 1/alpha
    assert 4 <= line["tick"] <= 8
    assert "errors-vs-baseline" in line["reason"]
    assert "broken.json" in result.stderr
    assert field in result.stderr


def test_replay_unreadable_json(runner, tmp_path):
    (tmp_path / "truncated.json").write_text('{"format": "guardian-', encoding="utf-8")
    result = run(runner, "replay", tmp_path / "truncated.json", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "truncated.json" in result.stderr


def test_replay_healthy_recording_promotes(runner, tmp_path):
    path = write_json(tmp_path / "fine.json", recording(canary_errors=0))
    result = run(runner, "replay", path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**json.loads(result.stdout), "file": "fine.json", "decision": "promote",
                                         "tick": None}


def test_replay_ignores_labels(runner, tmp_path):
    good = recording()
    relabelled = {**recording(), "labels": {"truth": "good", "onset_tick": None}}
    write_json(tmp_path / "a.json", good)
    write_json(tmp_path / "b.json", relabelled)
    result = run(runner, "replay", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    a, b = (json.loads(line) for line in result.stdout.splitlines())
    assert (a["decision"], a["tick"], a["reason"]) == (b["decision"], b["tick"], b["reason"])


def test_replay_with_rules(runner, tmp_path):
    # a 50% limit: 30% errors is no longer a reason to roll back
    rules = tmp_path / "lenient.yaml"
    rules.write_text(textwrap.dedent("""\
        service: checkout
        checks:
          - name: error-rate
            kind: threshold
            ratio: errors / requests
            above: 50%
            for: 2m
        """), encoding="utf-8")
    path = write_json(tmp_path / "rec.json", recording())
    result = run(runner, "replay", path, "--json", "--rules", rules)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["decision"] == "promote"


def test_replay_with_invalid_rules(runner, tmp_path):
    rules = tmp_path / "bad.yaml"
    rules.write_text("service: checkout\nbogus: 1\n", encoding="utf-8")
    path = write_json(tmp_path / "rec.json", recording())
    result = run(runner, "replay", path, "--rules", rules)
    assert result.exit_code == 2
    assert f"{rules}:2: bogus: unknown field" in result.stderr
    assert result.stdout == ""


def test_replay_human_output(runner, tmp_path):
    path = write_json(tmp_path / "rec.json", recording())
    result = run(runner, "replay", path)
    assert result.exit_code == 0
    assert re.match(r"rec\.json: rollback at tick \d+: errors-vs-baseline", text(result.stdout))


def test_shipped_bench_recordings_replay_if_present(runner, tmp_path):
    bench = Path("/work/shared/bench/recordings")
    files = sorted(bench.glob("*.json"))[:2] if bench.is_dir() else []
    if not files:
        pytest.skip("no bench recordings here")
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    result = run(runner, "replay", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [f.name for f in files]


# -- rollout commands -------------------------------------------------------------------------------------
def test_rollout_status_without_a_guardian(runner):
    result = run(runner, "rollout", "status", "nope", "--api", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert result.stdout == ""
    err = text(result.stderr)
    assert "cannot reach the guardian at http://127.0.0.1:9" in err
    assert "guardian serve" in err
    assert "Traceback" not in result.output


def test_rollout_start_bad_steps_fail_before_calling(runner):
    result = run(runner, "rollout", "start", "checkout", "--image", "x", "--steps", "10,ten",
                 "--api", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "--steps" in result.stderr
    assert "cannot reach" not in result.stderr


class _Borrowed:
    """Stands in for the CLI's httpx.Client: sends through one long-lived TestClient."""

    def __init__(self, client: TestClient, headers: dict[str, str]):
        self.client, self.headers = client, headers

    def __enter__(self) -> _Borrowed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def request(self, method: str, path: str, **kw):
        return self.client.request(method, path, headers=self.headers, **kw)


@pytest.fixture
def guardian(tmp_path, monkeypatch) -> Iterator[Components]:
    settings = Settings(db_path=str(tmp_path / "g.db"), rules=[str(REPO / "rules")], recordings_dir="",
                        token="tok")
    components = build(settings, source=RecordingSource(recording(canary_errors=0)), clock=FakeClock())
    with TestClient(create_app(components, run_scheduler=False)) as client:
        monkeypatch.setattr(cli, "_client", lambda api, token: _Borrowed(
            client, {"Authorization": f"Bearer {token}"} if token else {}))
        yield components


def test_rollout_start_and_overrides_through_the_api(runner, guardian):
    result = run(runner, "rollout", "start", "checkout", "--image", "checkout:2", "--steps", "20,100",
                 "--token", "tok")
    assert result.exit_code == 0, result.output
    rid = text(result.stdout).splitlines()[-1]
    state = guardian.store.get(rid)
    assert (state.service, state.image, state.steps, state.weight) == ("checkout", "checkout:2", (20, 100), 20)

    result = run(runner, "rollout", "status", rid, "--json", "--token", "tok")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["phase"] == "progressing"

    assert run(runner, "rollout", "pause", rid, "--token", "tok").exit_code == 0
    assert guardian.store.get(rid).phase.value == "paused"
    assert run(runner, "rollout", "watch", rid, "--token", "tok").exit_code == 3  # paused by a user

    assert run(runner, "rollout", "resume", rid, "--token", "tok").exit_code == 0
    assert run(runner, "rollout", "promote", rid, "--token", "tok").exit_code == 0
    assert run(runner, "rollout", "watch", rid, "--token", "tok").exit_code == 0  # promoted


def test_rollout_start_with_an_approval_step_and_approve(runner, guardian):
    result = run(runner, "rollout", "start", "checkout", "--image", "checkout:2", "--steps", "20,approve,100",
                 "--token", "tok")
    assert result.exit_code == 0, result.output
    rid = text(result.stdout).splitlines()[-1]
    state = guardian.store.get(rid)
    assert (state.steps, state.approvals) == ((20, 100), (0,))
    result = run(runner, "rollout", "approve", rid, "--token", "tok")  # not waiting yet: the API's 409, exit 2
    assert result.exit_code == 2 and "not waiting for approval" in text(result.output)
    guardian.store.save(state.evolve(awaiting_since=1.0))  # as the guard leaves it when the step passed
    assert "waiting for approval (guardian rollout approve" in text(run(runner, "rollout", "status", rid,
                                                                        "--token", "tok").stdout)
    assert run(runner, "rollout", "approve", rid, "--token", "tok").exit_code == 0
    assert guardian.store.get(rid).approved == (0,)
    assert run(runner, "rollout", "start", "checkout", "--image", "c:3", "--steps", "20,aprove",
               "--token", "tok").exit_code == 2


def test_rollout_rollback_then_watch_exits_1(runner, guardian):
    rid = text(run(runner, "rollout", "start", "checkout", "--image", "c:2", "--token", "tok").stdout).split()[-1]
    assert run(runner, "rollout", "rollback", rid, "--token", "tok").exit_code == 0
    assert run(runner, "rollout", "watch", rid, "--token", "tok").exit_code == 1


def test_rollout_api_errors_exit_2_with_the_detail(runner, guardian):
    result = run(runner, "rollout", "start", "check out", "--image", "x", "--token", "tok")
    assert result.exit_code == 2
    assert "HTTP 422" in result.stderr and "service:" in result.stderr

    result = run(runner, "rollout", "start", "checkout", "--image", "x")  # no token
    assert result.exit_code == 2
    assert "HTTP 401" in result.stderr
    assert guardian.store.list() == []

    result = run(runner, "rollout", "status", "nope", "--token", "tok")
    assert result.exit_code == 2
    assert "HTTP 404" in result.stderr


# -- help -------------------------------------------------------------------------------------------------
def test_top_level_help_lists_the_commands(runner):
    result = run(runner, "--help")
    assert result.exit_code == 0
    out = flat(result.stdout)
    for command in ("serve", "rules", "rollout", "replay"):
        assert command in out


def test_rollout_start_help_names_options_and_exit_codes(runner):
    result = run(runner, "rollout", "start", "--help")
    assert result.exit_code == 0
    out = flat(result.stdout)
    for option in ("--image", "--strategy", "--steps", "--target", "--wait", "--api", "--token"):
        assert option in out
    assert "canary | rolling | blue-green | observe" in out
    assert "exit 0 promoted, 1 rolled back, 3 paused" in out


def test_rules_check_help_names_the_line_format_and_exit_code(runner):
    out = flat(run(runner, "rules", "check", "--help").stdout)
    assert "FILE:LINE: field.path: message" in out
    assert "exits 2" in out


def test_rollout_watch_help_names_the_exit_codes(runner):
    out = flat(run(runner, "rollout", "watch", "--help").stdout)
    assert "exit 0 promoted, 1 rolled back, 3 paused" in out


def _serve(tmp_path, *args):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDIAN_")}
    env["GUARDIAN_DB_PATH"] = str(tmp_path / "state.db")
    return subprocess.run([sys.executable, "-m", "guardian", "serve", "--port", "0", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_serve_refuses_to_start_on_invalid_rules(tmp_path):
    bad = tmp_path / "rules"
    bad.mkdir()
    (bad / "checkout.yaml").write_text("service: checkout\nchecks:\n  - name: x\n    kind: threshold\n"
                                       "    signal: p99_seconds\n    above: 1s\n    for: soon\n")
    run = _serve(tmp_path, "--rules", str(bad))
    assert run.returncode == 2
    assert f"{bad / 'checkout.yaml'}:7: checks[0].for: bad duration 'soon'" in run.stderr
    assert "not started" in run.stderr
    assert not (tmp_path / "state.db").exists(), "nothing may be created when the rules are invalid"


def test_serve_refuses_an_unknown_actuator_in_its_config(tmp_path):
    config = tmp_path / "guardian.yaml"
    config.write_text("tick_seconds: 5\ndefault_target: kubernetez://cluster\n")
    run = _serve(tmp_path, "--config", str(config))
    assert run.returncode == 2
    assert f"{config}:2: default_target: unknown actuator 'kubernetez'" in run.stderr
    assert "known: docker, kubernetes, nginx, noop, swarm, webhook" in run.stderr
    assert not (tmp_path / "state.db").exists()


# -- issue 17: serve on a port in use, refusals, --wait's timeout and exit codes, status lines, help ---------
def test_serve_on_a_port_in_use_says_so_before_anything_is_ready(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _serve(tmp_path, "--port", str(port))
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])  # never 3: that is "paused or inconclusive"
    assert f"port {port}" in run.stderr and "already in use" in run.stderr
    assert "--port" in run.stderr and "GUARDIAN_PORT" in run.stderr  # what to do about it
    assert not re.search(r"\bready\b", run.stderr) and "scheduler" not in run.stderr  # nothing announced
    assert not (tmp_path / "state.db").exists()


def test_a_cli_401_names_the_token_option_and_variable(runner, guardian):
    result = run(runner, "rollout", "start", "checkout", "--image", "x")  # no token
    assert result.exit_code == 2
    err = flat(result.stderr)
    assert "HTTP 401" in err and "--token" in err and "GUARDIAN_TOKEN" in err

    result = run(runner, "rollout", "pause", "nope", "--token", "wrong")
    assert result.exit_code == 2
    assert "--token" in flat(result.stderr) and "GUARDIAN_TOKEN" in flat(result.stderr)


class FakeTime:
    """Stands in for the CLI's `time` module: sleeping advances the guardian's fake clock and runs the ticks that
    became due (as the scheduler would), so `--wait` follows a real rollout in no time."""

    def __init__(self, components: Components, clock: FakeClock, ticking: bool = True):
        self.c, self.clock, self.ticking = components, clock, ticking

    def monotonic(self) -> float:
        return self.clock.now()

    def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.ticking:
            for state in self.c.store.list(active_only=True):
                while self.c.guard.tick(state.id) is not None:
                    pass


def noisy_recording(ticks: int = 400, *, canary_requests: int = 12, seed: int = 7) -> dict:
    """A healthy rollout of `shop` at 1 s ticks with every standard signal, its counts jittering as real ones do."""
    import random

    rnd = random.Random(seed)
    jitter = lambda base, spread: [max(0, base + rnd.randint(-spread, spread)) for _ in range(ticks)]  # noqa: E731
    return {
        "format": "guardian-recording/v1", "service": "shop", "step_seconds": 1, "start": "2026-01-05T12:00:00Z",
        "series": {
            "requests": {"canary": jitter(canary_requests, 3) if canary_requests else [0] * ticks,
                         "baseline": jitter(40, 5)},
            "errors": {"canary": [0] * ticks, "baseline": [rnd.choice([0, 0, 1]) for _ in range(ticks)]},
            "slow": {"canary": [0] * ticks, "baseline": [rnd.choice([0, 1, 2]) for _ in range(ticks)]},
            "p99_seconds": {"canary": [0.2 + rnd.random() * 0.05 for _ in range(ticks)],
                            "baseline": [0.2 + rnd.random() * 0.05 for _ in range(ticks)]},
            "cpu_seconds": {"canary": [0.5] * ticks, "baseline": [1.5] * ticks},
            "memory_bytes": {"canary": [5e7] * ticks, "baseline": [5e7] * ticks},
        },
    }


@pytest.fixture
def live(tmp_path, monkeypatch):
    """A guardian on 1 s ticks (the default policy for `shop`) whose clock the CLI's sleeps move."""

    def make(rec: dict, ticking: bool = True) -> Components:
        clock = FakeClock()
        settings = Settings(db_path=str(tmp_path / "live.db"), rules=[str(REPO / "rules")], recordings_dir="",
                            tick_seconds=1, evaluation_delay=0)
        components = build(settings, source=RecordingSource(rec), clock=clock)
        client = TestClient(create_app(components, run_scheduler=False)).__enter__()
        stack.append(client)
        monkeypatch.setattr(cli, "_client", lambda api, token: _Borrowed(client, {}))
        monkeypatch.setattr(cli, "time", FakeTime(components, clock, ticking))
        return components

    stack: list[TestClient] = []
    yield make
    for client in stack:
        client.__exit__(None, None, None)


def test_wait_has_a_default_timeout_and_says_0_means_never(runner):
    for command in (["rollout", "start"], ["rollout", "watch"]):
        timeout = _option_rows(run(runner, *command, "--help").stdout)["--timeout"]
        default = re.search(r"\[default: \(?(\d+)", timeout)
        assert default and int(default.group(1)) > 0, timeout
        assert "0 = never" in timeout or "0 means never" in timeout


def test_wait_timing_out_while_progressing_exits_4(runner, live):
    live(noisy_recording(), ticking=False)  # no tick ever runs: the rollout stays progressing, nothing to conclude
    result = run(runner, "rollout", "start", "shop", "--image", "shop:2", "--wait", "--timeout", "5")
    assert result.exit_code == 4, result.output
    assert "still progressing" in text(result.stdout) and "--timeout" in text(result.stdout)


def test_wait_on_a_canary_without_traffic_ends_by_default_with_exit_3(runner, live):
    live(noisy_recording(4000, canary_requests=0))  # the guardian pauses it, waiting for data, and it never comes
    result = run(runner, "rollout", "start", "shop", "--image", "shop:2", "--wait")  # no --timeout given
    assert result.exit_code == 3, result.output
    out = text(result.stdout)
    assert "paused by the guardian" in out and "waiting for data" in out


def _wait_90s(runner, live) -> list[str]:
    live(noisy_recording())
    result = run(runner, "rollout", "start", "shop", "--image", "shop:2", "--steps", "25,50,100",
                 "--analysis-seconds", "30", "--wait")
    assert result.exit_code == 0, result.output
    return text(result.stdout).splitlines()


def test_wait_prints_a_line_only_when_something_changes(runner, live):
    lines = _wait_90s(runner, live)
    assert len(lines) <= 30, "\n".join(lines)  # was 1 + 2 a tick: 200 lines for this ~100 s rollout
    assert any("step 3/3" in line and "100%" in line for line in lines)
    assert lines[-1].startswith("promoted")


def test_status_lines_read_for_people(runner, live):
    lines = _wait_90s(runner, live)
    out = "\n".join(lines)
    assert "None" not in out
    assert not re.search(r"\d\.\d{5,}", out), out  # no 0.0005263157894736842
    assert "(breaching)" not in out
    for line in lines:
        if re.search(r"\b(inconclusive|hold|warming up)\b", line) and ":" in line:
            check, _, said = line.strip().partition(": ")
            assert re.search(r"(inconclusive|hold|warming up)\S* ?(—|-|:) ?\w", said), line  # and why
    assert re.search(r"p99-vs-baseline: pass .*ms", out), out  # seconds shown as people read them


def test_status_of_one_rollout_shows_every_verdict_with_its_reason(runner, live):
    c = live(noisy_recording(4000, canary_requests=0))
    result = run(runner, "rollout", "start", "shop", "--image", "shop:2")
    rid = text(result.stdout).split()[-1]
    cli.time.sleep(10)
    out = text(run(runner, "rollout", "status", rid).stdout)
    assert "paused by the guardian" in out
    assert re.search(r"errors-vs-baseline: inconclusive — .*(no data|too little|requests)", out), out
    assert c.store.get(rid).phase.value == "paused"


# -- help -------------------------------------------------------------------------------------------------
def _option_rows(help_text: str) -> dict[str, str]:
    """Option name -> the text of its row(s) in a rich help panel."""
    rows: dict[str, str] = {}
    current = None
    for line in text(help_text).splitlines():
        cells = line.strip("│ ").strip()
        m = re.match(r"^(\*\s+)?(--[\w-]+)", cells)
        if m:
            current = m.group(2)
            rows[current] = cells
        elif current and cells and not line.lstrip().startswith(("╰", "╭")):
            rows[current] += " " + cells
        elif line.lstrip().startswith("╰"):
            current = None
    return rows


COMMANDS = [["serve"], ["rules", "check"], ["baseline", "fit"], ["rollout", "start"], ["rollout", "status"],
            ["rollout", "watch"], ["rollout", "pause"], ["rollout", "approve"], ["rollout", "list"],
            ["rollout", "explain"], ["alerts"],
            ["report"], ["replay"], ["detect"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_shows_every_options_default(runner, command):
    result = run(runner, *command, "--help")
    assert result.exit_code == 0, result.output
    rows = _option_rows(result.stdout)
    assert rows, result.stdout
    for option, row in rows.items():
        if option == "--help":
            continue
        assert "[default:" in row or "[required]" in row, f"{' '.join(command)} {option}: {row}"


def test_replay_workers_help_says_one_thing(runner):
    row = _option_rows(run(runner, "replay", "--help").stdout)["--workers"]
    assert row.count("default") == 1, row


def test_command_list_does_not_break_a_sentence(runner):
    out = text(run(runner, "--help").stdout)
    listed = [line for line in out.splitlines() if line.strip("│ ").startswith("report ")]
    assert listed and "every decision marked" in " ".join(listed[0].split()), out


def test_version(runner):
    from guardian import __version__

    result = run(runner, "--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


@pytest.mark.parametrize("command", [["serve"], ["rollout", "start"], ["rollout", "status"], ["rollout", "watch"]])
def test_main_commands_show_examples(runner, command):
    out = text(run(runner, *command, "--help").stdout)
    assert "Examples" in out or "Example" in out
    examples = [line.strip() for line in out.splitlines() if line.strip().startswith("guardian ")]
    assert any(line.startswith(f"guardian {' '.join(command)} ") for line in examples), out
    assert all(line.count("guardian ") == 1 for line in examples), examples  # one example a line


def test_rollout_list(runner, guardian):
    a = text(run(runner, "rollout", "start", "checkout", "--image", "checkout:2", "--token", "tok").stdout).split()[-1]
    run(runner, "rollout", "rollback", a, "--token", "tok")
    b = text(run(runner, "rollout", "start", "checkout", "--image", "checkout:3", "--token", "tok").stdout).split()[-1]
    result = run(runner, "rollout", "list")
    assert result.exit_code == 0, result.output
    out = text(result.stdout)
    assert a in out and b in out and "rolled_back" in out and "progressing" in out
    out = text(run(runner, "rollout", "list", "--phase", "progressing").stdout)
    assert b in out and a not in out
    assert text(run(runner, "rollout", "list", "--service", "payments").stdout).strip() == "no rollouts"
    rows = json.loads(run(runner, "rollout", "list", "--json", "--service", "checkout").stdout)
    assert {r["id"] for r in rows} == {a, b}
