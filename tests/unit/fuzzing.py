"""Fuzzing properties shared by tests/unit/test_fuzz.py (few examples) and benchmarks/fuzz.py (many).

Three targets:

- the HTTP API, through schemathesis (its OpenAPI schema, in process over ASGI): no 5xx on any input,
  and a 4xx changes nothing: the store's tables (rollouts, ticks, ops, decisions, alerts, models) and
  the actions the (noop) actuator was asked for are the same before and after. Without the operator
  token every mutating call is a 401 and changes nothing;
- the rule parser (guardian.rules.loader.parse_text): any text is a RuleFile or a RuleError whose
  problems each name the file, a line inside it, a field and a message;
- the recording reader (guardian.sources.recording.load_recording, then replay through the engine):
  any bytes are a recording that replays, or a RecordingError that names the file.

Each `*_property(max_examples)` runs one Hypothesis search and returns a `Report` (cases run, and the
distinct failures it found, if any) instead of raising, so the benchmark can count them.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, Verbosity, given, settings

from tests.unit.recordings import steady_recording

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fuzz-operator-token"
MUTATING = "POST"  # every mutating operation of the API is a POST
# Flagger may send the gate token inside the body (metadata.token): a body that cannot be read is refused
# (400/422) before anyone can tell whether it carried a token. Still never a 2xx, never a change.
TOKEN_IN_BODY = "/v1/gates/"


@dataclass
class Report:
    target: str
    cases: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # kind of failure -> its first example

    def fail(self, kind: str, example: str = "") -> None:
        self.failures.setdefault(kind, example)


def _settings(max_examples: int, *, shrink: bool = False) -> settings:
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=max_examples, deadline=None, database=None, phases=phases, verbosity=Verbosity.quiet,
                    suppress_health_check=list(HealthCheck))


def _run(report: Report, test: Callable[[], None], label: str = "") -> Report:
    """Run a @given test; a failure the property did not catch itself (an unexpected exception) is recorded.
    Unsatisfiable is not a failure: schemathesis has no negative case for an operation without inputs."""
    from hypothesis.errors import Unsatisfiable

    try:
        test()
    except Unsatisfiable:
        pass
    except Exception as e:  # noqa: BLE001 - reported, not raised: the benchmark counts failures
        report.fail(f"{label}{type(e).__name__} (property aborted)", str(e)[:300])
    return report


# -- the HTTP API ---------------------------------------------------------------------------------------
class ApiHarness:
    """The real app (store, rules, guard) on a recording source, a fake clock and one noop actuator."""

    def __init__(self, workdir: Path, *, token: str | None = TOKEN):
        from guardian.actuators.noop import NoopActuator
        from guardian.api.app import create_app
        from guardian.api.components import build
        from guardian.clock import FakeClock
        from guardian.settings import Settings
        from guardian.sources.recording import RecordingSource

        self.noop = NoopActuator()
        self.clock = FakeClock()
        s = Settings(db_path=str(workdir / "guardian.db"), rules=[str(REPO / "rules")],
                     recordings_dir=str(workdir / "recordings"), token=token)
        self.c = build(s, source=RecordingSource(steady_recording(30)), clock=self.clock,
                       actuators=lambda target: self.noop)
        self.fastapi = create_app(self.c, run_scheduler=False)
        self.token = token
        self.ids: list[str] = []

        async def app(scope, receive, send):  # no lifespan: nothing to start, and close() closes the store
            if scope["type"] != "lifespan":
                await self.fastapi(scope, receive, send)

        self.app = app

    def seed(self) -> None:
        """Rollouts in several phases, so path parameters can name real ones."""
        from guardian.domain import Action
        from guardian.engine.start import start_spec

        for service, then in (("checkout", None), ("payments", Action.PAUSE), ("search", Action.ROLLBACK)):
            state = self.c.guard.start(start_spec(self.c.settings, service=service, image=f"{service}:2"))
            if then is not None:
                self.c.guard.override(state.id, then)
            self.ids.append(state.id)

    def snapshot(self) -> tuple[Any, ...]:
        store = self.c.store
        with store._lock:
            tables = tuple(
                (name, tuple(tuple(row) for row in store._db.execute(f"SELECT * FROM {name} ORDER BY rowid")))
                for name in ("rollouts", "ticks", "ops", "decisions", "alerts", "models")
            )
        return tables, len(self.noop.applied)

    def close(self) -> None:
        self.c.store.close()


@contextlib.contextmanager
def api_harness(*, token: str | None = TOKEN) -> Iterator[ApiHarness]:
    with tempfile.TemporaryDirectory(prefix="guardian-fuzz-") as tmp:
        env = {k: os.environ.pop(k) for k in list(os.environ) if k.upper().startswith("GUARDIAN_")}
        try:
            h = ApiHarness(Path(tmp), token=token)
            h.seed()
            yield h
        finally:
            os.environ.update(env)


def api_schema(h: ApiHarness):
    import schemathesis

    if getattr(h, "schema", None) is None:
        h.schema = schemathesis.openapi.from_asgi("/openapi.json", h.app)
    return h.schema


def _operations(schema) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def api_property(h: ApiHarness, max_examples: int, *, authenticated: bool = True,
                 modes: tuple[str, ...] = ("positive", "negative")) -> Report:
    """Every operation, in each generation mode, `max_examples` cases each."""
    from schemathesis import GenerationMode

    report = Report("api" if authenticated else "api-no-token")
    schema = api_schema(h)
    for op in _operations(schema):
        # strings in the path and headers cannot be made invalid: negative cases only where a body or query is
        negatable = len(op.query) + len(op.body) > 0
        for mode in modes if negatable else [m for m in modes if m != "negative"]:
            strategy = op.as_strategy(generation_mode=GenerationMode(mode))
            _run(report, _api_test(h, op, strategy, report, max_examples, authenticated),
                 f"{op.method.upper()} {op.path} ({mode}): ")
    return report


VALID_ALERTS = {
    "version": "4", "groupKey": "{}:{alertname=\"HighErrors\"}", "truncatedAlerts": 0, "status": "firing",
    "receiver": "guardian", "groupLabels": {"alertname": "HighErrors"}, "commonLabels": {}, "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "alerts": [{"status": "firing", "labels": {"alertname": "HighErrors", "service": "checkout", "severity": "critical",
                                               "track": "canary"},
                "annotations": {"summary": "5xx"}, "startsAt": "2026-01-05T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "f00d"}],
}


def alert_bodies() -> st.SearchStrategy[bytes]:
    """The webhook reads its body itself (no schema to generate from): mutated valid payloads and junk."""
    return st.one_of(
        st.binary(max_size=200),
        jsonish.map(lambda d: json.dumps(d, allow_nan=True).encode()),
        _drawn(lambda draw: json.dumps(_mutate_structure(VALID_ALERTS, draw), allow_nan=True).encode()),
    )


def _api_test(h: ApiHarness, op, strategy, report: Report, max_examples: int, authenticated: bool):
    label = f"{op.method.upper()} {op.path}"
    webhook = op.method.upper() == "POST" and op.path == "/v1/alerts"

    @_settings(max_examples)
    @given(case=strategy, known=st.sampled_from([None, 0, 1, 2]), auth=st.sampled_from(["given", "none", "token"]),
           alerts=alert_bodies() if webhook else st.none())
    def test(case, known, auth, alerts):
        if known is not None and "rollout_id" in case.path_parameters:
            case.path_parameters["rollout_id"] = h.ids[known]
        if alerts is not None:
            case.body, case.media_type = alerts, "application/json"
        headers: dict[str, str] = {}
        if not authenticated:
            if auth != "given":  # "given": whatever schemathesis generated (never the token)
                case.headers.pop("Authorization", None)
        elif auth == "token" or auth == "none" and h.token:
            case.headers.pop("Authorization", None)
            headers = {"Authorization": f"Bearer {h.token}"}
        before = h.snapshot()
        try:
            r = case.call(headers=headers)
        except Exception as e:  # noqa: BLE001
            report.cases += 1
            report.fail(f"{label}: the call raised {type(e).__name__}", str(e)[:300])
            return
        report.cases += 1
        what = f"{label} {case.method} {case.formatted_path} query={case.query!r} body={_short(case.body)}"
        if r.status_code >= 500:
            report.fail(f"{label}: {r.status_code}", f"{what}: {r.text[:200]}")
        elif not authenticated and case.method.upper() == MUTATING and h.token and r.status_code != 401 and not (
                op.path.startswith(TOKEN_IN_BODY) and 400 <= r.status_code < 500):
            report.fail(f"{label}: {r.status_code}, not 401, without the token", what)
        if 400 <= r.status_code < 500:
            if h.snapshot() != before:
                report.fail(f"{label}: {r.status_code} changed the state", what)
            with contextlib.suppress(ValueError):
                body = r.json()
                if not (isinstance(body, dict) and {"error", "detail"} <= set(body)):
                    report.fail(f"{label}: {r.status_code} body is not {{error, detail}}", r.text[:200])

    return test


def _short(body: Any) -> str:
    text = repr(body)
    return text if len(text) < 160 else text[:157] + "..."


# -- the rule parser --------------------------------------------------------------------------------------
VALID_RULES = (REPO / "rules" / "checkout.yaml").read_text(encoding="utf-8")
RULE_KEYS = ["service", "arms", "queries", "checks", "alerts", "name", "kind", "ratio", "signal", "above",
             "below", "for", "window", "min_samples", "confidence", "arm", "action", "replicas", "match",
             "type", "promql", "label", "canary", "baseline", "severity", "threshold", "compare", "model"]
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(["5%", "1s", "250ms", "2m", "errors / requests", "p99_seconds", "rollback", "scale",
                     "threshold", "compare", "baseline", "canary", "nan", "inf", "-1", "1e400", "0x10", "~",
                     "{{service}}", "100%", "1.5d", "", " / ", "errors /", "/requests"]),
)
_keys = st.one_of(st.sampled_from(RULE_KEYS), st.text(max_size=8), st.integers(), st.booleans(), st.none())
yamlish = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)


def _dump_yaml(data: Any) -> str:
    from io import StringIO

    from ruamel.yaml import YAML

    out = StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


def _drawn(build: Callable[[Callable], Any]) -> st.SearchStrategy:
    """A strategy from a function of `draw` (st.composite without the decorator)."""
    return st.composite(lambda draw: build(draw))()


def _mutate_text(text: str, draw: Callable) -> str:
    """Delete, duplicate, replace or insert a slice of a valid file (line-wise or char-wise)."""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "dupline", "dropline", "indent", "merge",
                                     "alias"]))
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        piece = draw(st.one_of(st.text(max_size=12), st.sampled_from(
            [":", "- ", "{", "}", "[", "]", "&a", "*a", "!!python/object:os.system", "\t", "\n", "'", '"', "%",
             "<<: *a", "? ", "---\n", "...\n", "!!binary", "\x00", "\ufeff", "#", "nan", "1e999"])))
        lines = text.splitlines(keepends=True)
        k = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + piece + text[i:]
        elif kind == "replace":
            text = text[:i] + piece + text[j:]
        elif lines and kind == "merge":  # a `<<:` merge key beside line k's key, or an anchor and its alias
            indent = len(lines[k]) - len(lines[k].lstrip(" -"))
            merged = json.dumps(draw(st.dictionaries(st.sampled_from(RULE_KEYS), _json_scalars, max_size=4)))
            text = "".join(lines[:k + 1] + [" " * indent + "<<: " + merged + "\n"] + lines[k + 1:])
        elif lines and kind == "alias":
            m = draw(st.integers(0, max(0, len(lines) - 1)))
            anchored = lines[k].replace(": ", ": &x ", 1) if ": " in lines[k] else lines[k]
            aliased = lines[m].split(": ", 1)[0] + ": *x\n" if ": " in lines[m] else lines[m]
            lines[k], lines[m] = anchored, aliased if m != k else anchored
            text = "".join(lines)
        elif lines and kind == "dupline":
            text = "".join(lines[:k + 1] + lines[k:])
        elif lines and kind == "dropline":
            text = "".join(lines[:k] + lines[k + 1:])
        elif lines:
            text = "".join(lines[:k] + ["  " + lines[k]] + lines[k + 1:])
    return text


def _mutate_structure(data_obj: Any, draw: Callable) -> Any:
    """Replace one node (anywhere) of a parsed valid file with an arbitrary YAML-ish value."""
    doc = copy.deepcopy(data_obj)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            paths.append((node, k))
            walk(v)

    walk(doc)
    for _ in range(draw(st.integers(1, 3))):
        if not paths:
            break
        parent, key = draw(st.sampled_from(paths))
        with contextlib.suppress(KeyError, IndexError):
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[key]
            else:
                parent[key] = draw(yamlish)
    return doc


def rule_texts() -> st.SearchStrategy[str]:
    from ruamel.yaml import YAML

    valid = YAML(typ="safe", pure=True).load(VALID_RULES)
    return st.one_of(
        st.text(max_size=200),
        st.tuples(st.sampled_from(["", "a: ", "checks:\n  - "]), st.sampled_from("[{"),
                  st.integers(1, 800)).map(lambda t: t[0] + t[1] * t[2]),  # deep nesting (RecursionError from ~450)
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
        yamlish.map(_dump_yaml),
        st.fixed_dictionaries({"service": _scalars, "checks": yamlish}, optional={
            "arms": yamlish, "queries": yamlish, "alerts": yamlish}).map(_dump_yaml),
        _drawn(lambda draw: _mutate_text(VALID_RULES, draw)),
        _drawn(lambda draw: _dump_yaml(_mutate_structure(valid, draw))),
    )


def check_rule_text(text: str, filename: str = "fuzz.yaml") -> str | None:
    """None when parse_text gave a RuleFile or a well-formed RuleError; else what went wrong."""
    from guardian.errors import RuleError
    from guardian.rules.loader import parse_text
    from guardian.rules.models import RuleFile

    lines = max(1, text.count("\n") + 1)
    try:
        result = parse_text(text, filename)
    except RuleError as e:
        if not e.problems:
            return "RuleError without problems"
        for p in e.problems:
            if p.file != filename or not isinstance(p.line, int) or not 1 <= p.line <= lines + 1 \
                    or not p.field or not p.message:
                return f"malformed problem {p!r}"
        return None
    except Exception as e:  # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        return f"{type(e).__name__} at {Path(where.filename).name}:{where.lineno} ({where.name})"
    if not isinstance(result, RuleFile):
        return f"parse_text returned {type(result).__name__}"
    return None


def rules_property(max_examples: int) -> Report:
    report = Report("rules")

    @_settings(max_examples)
    @given(text=rule_texts())
    def test(text):
        report.cases += 1
        problem = check_rule_text(text)
        if problem:
            report.fail(problem, repr(text[:200]))

    return _run(report, test)


# -- the recording reader ---------------------------------------------------------------------------------
VALID_RECORDING = steady_recording(12, canary_errors=3)
_extreme = st.sampled_from([0, -0.0, 1, -1, 5e-324, 1e-300, 1e308, -1e308, 10**400, -(10**400), float("nan"),
                            float("inf"), float("-inf"), 86400, 86400.5, 2**63])
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(), _extreme,
                          st.text(max_size=12),
                          st.sampled_from(["guardian-recording/v1", "2026-01-05T12:00:00Z", "2026-13-45", "Z",
                                           "canary", "baseline", "requests", "errors", "p99_seconds"]))
jsonish = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=30)


_numbers = st.one_of(st.none(), st.integers(-10**6, 10**9), st.floats(), _extreme)


@st.composite
def _series(draw) -> dict[str, Any]:
    """Well-formed series of arbitrary (and extreme) numbers: what gets past the reader into the engine."""
    n = draw(st.integers(0, 25))
    names = draw(st.sets(st.sampled_from(["requests", "errors", "slow", "p99_seconds", "cpu_seconds",
                                          "memory_bytes", "custom"]), max_size=6))
    arms = st.sets(st.sampled_from(["canary", "baseline", "other"]), max_size=3)
    return {name: {arm: draw(st.lists(_numbers, min_size=n, max_size=n)) for arm in draw(arms)} for name in names}


def recording_bytes() -> st.SearchStrategy[bytes]:
    valid_text = json.dumps(VALID_RECORDING)

    def dump(doc: Any) -> bytes:
        return json.dumps(doc, allow_nan=True).encode()

    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.tuples(st.sampled_from(['', '{"series": ']), st.sampled_from("[{1"),
                  st.integers(1, 20000)).map(lambda t: (t[0] + t[1] * t[2]).encode()),  # deep nesting, long ints
        st.fixed_dictionaries({"format": st.just("guardian-recording/v1"), "step_seconds": _numbers,
                               "start": st.sampled_from(["2026-01-05T12:00:00Z", "0001-01-01T00:00:00",
                                                         "9999-12-31T23:59:59+14:00", "2026-01-05"]),
                               "series": _series()},
                              optional={"service": _json_scalars}).map(dump),
        jsonish.map(dump),
        st.fixed_dictionaries({"format": st.just("guardian-recording/v1"), "step_seconds": _json_scalars,
                               "start": _json_scalars, "series": jsonish},
                              optional={"service": _json_scalars, "models": jsonish, "labels": jsonish}).map(dump),
        _drawn(lambda draw: dump(_mutate_structure(VALID_RECORDING, draw))),
        _drawn(lambda draw: _mutate_text(valid_text, draw).encode("utf-8", "surrogatepass")),
    )


def check_recording_bytes(raw: bytes, workdir: Path) -> str | None:
    """None when the bytes load and replay, or are refused with a RecordingError naming the file."""
    from guardian.engine.replay import replay_file
    from guardian.errors import ModelMissing, RecordingError

    path = workdir / "fuzz.json"
    path.write_bytes(raw)
    try:
        replay_file(path)
    except RecordingError as e:
        return None if str(e).startswith("fuzz.json") else f"RecordingError not naming the file: {e}"
    except ModelMissing:
        return None  # documented: the replay CLI reports it as the file's error (replay._replay_or_error)
    except Exception as e:  # noqa: BLE001
        where = traceback.extract_tb(e.__traceback__)[-1]
        return f"{type(e).__name__} at {Path(where.filename).name}:{where.lineno} ({where.name})"
    return None


def recordings_property(max_examples: int) -> Report:
    report = Report("recordings")
    with tempfile.TemporaryDirectory(prefix="guardian-fuzz-") as tmp:

        @_settings(max_examples)
        @given(raw=recording_bytes())
        def test(raw):
            report.cases += 1
            problem = check_recording_bytes(raw, Path(tmp))
            if problem:
                report.fail(problem, repr(raw[:2000]))

        return _run(report, test)
