"""Rule files (docs/rules.md; SPEC.md §5, outside this repository): the shipped rules, every kind of mistake
as `FILE:LINE: field.path: message`, duration and limit parsing, PromQL rendering, and the rule book's
keep-the-last-good-rules reload."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from guardian.errors import Problem, RuleError
from guardian.rules.book import RuleBook
from guardian.rules.defaults import DEFAULT_RULES, SEED_THRESHOLD_RULES, STANDARD_QUERIES
from guardian.rules.loader import DEFAULT_RULESET, load_paths, parse_text
from guardian.rules.models import parse_duration, parse_number
from guardian.rules.promql import escape_label_value, format_duration, render

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "rules"

VALID = """\
service: payments
checks:
  - name: error-rate
    kind: threshold
    ratio: errors / requests
    above: 5%
    for: 2m
    action: rollback
"""


def problems_of(text: str, filename: str = "r.yaml") -> list[Problem]:
    with pytest.raises(RuleError) as err:
        parse_text(textwrap.dedent(text), filename)
    return err.value.problems


def only_problem(text: str, filename: str = "r.yaml") -> Problem:
    found = problems_of(text, filename)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


# -- the shipped rules ------------------------------------------------------------------------------
def test_shipped_rules_folder_loads():
    sets = load_paths([RULES_DIR])
    assert set(sets) == {"checkout"}
    ruleset = sets["checkout"]
    assert ruleset.source.endswith("checkout.yaml")
    # the standard signals are merged in, and the file's own query is added
    assert set(STANDARD_QUERIES) <= set(ruleset.queries)
    assert "throttled" in ruleset.queries


def test_shipped_rules_express_the_seed_policy():
    checks = {c.name: c for c in load_paths([RULES_DIR])["checkout"].rules.checks}
    assert set(checks) == {"error-rate", "p99-latency"}

    errors = checks["error-rate"]
    assert errors.signals == ("errors", "requests")
    assert errors.direction == "above"
    assert errors.limit == pytest.approx(0.05)
    assert errors.for_ == 120.0
    assert errors.action == "rollback"

    p99 = checks["p99-latency"]
    assert p99.signals == ("p99_seconds",)
    assert p99.direction == "above"
    assert p99.limit == pytest.approx(1.0)
    assert p99.for_ == 180.0
    assert p99.action == "rollback"


def test_shipped_alert_routes():
    alerts = load_paths([RULES_DIR])["checkout"].rules.alerts
    assert [(a.match, a.action) for a in alerts] == [
        ({"severity": "critical"}, "rollback"),
        ({"severity": "warning"}, "pause"),
    ]


def test_built_in_seed_threshold_policy():
    checks = {c.name: c for c in SEED_THRESHOLD_RULES.checks}
    assert (checks["error-rate"].signals, checks["error-rate"].limit, checks["error-rate"].for_,
            checks["error-rate"].action) == (("errors", "requests"), 0.05, 120.0, "rollback")
    assert (checks["p99-latency"].signals, checks["p99-latency"].limit, checks["p99-latency"].for_,
            checks["p99-latency"].action) == (("p99_seconds",), 1.0, 180.0, "rollback")


def test_built_in_default_policy_compares_every_standard_signal_with_alpha_split():
    checks = {c.name: c for c in DEFAULT_RULES.checks}
    assert {c.kind for c in checks.values()} == {"compare"}
    assert checks["errors-vs-baseline"].signals == ("errors", "requests")
    assert checks["slow-vs-baseline"].signals == ("slow", "requests")
    assert {c.kind_of_test for c in checks.values()} == {"rate", "sign", "collapse", "trend"}
    assert sum(c.alpha for c in checks.values()) <= 0.05
    assert DEFAULT_RULESET.source == "built-in default"


def test_valid_text_parses():
    rules = parse_text(VALID, "r.yaml")
    assert rules.service == "payments"
    assert rules.checks[0].limit == pytest.approx(0.05)
    assert rules.checks[0].for_ == 120.0


# -- every kind of mistake --------------------------------------------------------------------------
def test_problem_formats_as_file_line_field_message():
    assert str(Problem("r.yaml", 7, "checks[0].for", "bad")) == "r.yaml:7: checks[0].for: bad"


def test_malformed_yaml_reports_its_line():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
           signal: errors
        """)
    assert (p.file, p.line, p.field) == ("r.yaml", 5, "(yaml)")
    assert p.message.startswith("malformed YAML")


def test_tab_in_yaml_reports_its_line():
    p = only_problem("service: x\nqueries:\n  q:\n    promql: up\n\tbad: 1\n")
    assert (p.line, p.field) == (5, "(yaml)")


def test_duplicate_yaml_key_is_refused():
    p = only_problem("""\
        service: x
        service: y
        """)
    assert p.field == "(yaml)"
    assert "duplicate key" in p.message


def test_unknown_field():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: 1
            colour: red
        """)
    assert str(p) == "r.yaml:7: checks[0].colour: unknown field"


def test_unknown_top_level_field():
    p = only_problem("""\
        service: x
        chekcs: []
        """)
    assert str(p) == "r.yaml:2: chekcs: unknown field; did you mean 'checks'?"


def test_wrong_type():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: 1
            min_samples: lots
        """)
    assert (p.line, p.field) == (7, "checks[0].min_samples")
    assert "number" in p.message


def test_wrong_type_of_a_section():
    p = only_problem("""\
        service: x
        checks: 5
        """)
    assert (p.line, p.field) == (2, "checks")
    assert "list" in p.message


def test_bad_limit():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: lots
        """)
    assert (p.line, p.field) == (6, "checks[0].above")
    assert "expected a number" in p.message


@pytest.mark.parametrize("duration", ["2 minutes", "soon", "m", "-5s", "2x"])
def test_bad_duration(duration):
    p = only_problem(f"""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: 1
            for: {duration}
        """)
    assert (p.line, p.field) == (7, "checks[0].for")
    assert p.message.startswith(f"bad duration {duration!r}")
    assert "2m" in p.message  # says what a duration looks like


def test_negative_numeric_duration():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: 1
            window: -30
        """)
    assert (p.line, p.field) == (7, "checks[0].window")
    assert "negative" in p.message


def test_unknown_action():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: 1
            action: explode
        """)
    assert (p.line, p.field) == (7, "checks[0].action")
    for action in ("rollback", "pause", "scale", "notify"):
        assert action in p.message


def test_scale_needs_a_replica_delta():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: cpu_seconds
            above: 1
            action: scale
            replicas: 0
        """)
    assert (p.line, p.field) == (3, "checks[0]")
    assert "replicas" in p.message


def test_unknown_signal_in_ratio():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            ratio: oops / requests
            above: 5%
        """)
    assert (p.line, p.field) == (5, "checks[0].ratio")
    assert "unknown signal 'oops'" in p.message
    assert "errors" in p.message and "requests" in p.message  # lists the known ones


def test_unknown_signal():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: nope
            above: 1
        """)
    assert (p.line, p.field) == (5, "checks[0].signal")
    assert "unknown signal 'nope'" in p.message


def test_signal_defined_under_queries_is_known():
    rules = parse_text(textwrap.dedent("""\
        service: x
        queries:
          throttled:
            type: counter
            promql: 'http_requests_total{service="{{service}}",{{arm_label}}="{{arm}}",code="429"}'
        checks:
          - name: a
            kind: threshold
            ratio: throttled / requests
            above: 1%
        """), "r.yaml")
    assert rules.checks[0].signals == ("throttled", "requests")


def test_malformed_ratio():
    p, *_ = problems_of("""\
        service: x
        checks:
          - name: a
            kind: threshold
            ratio: errors requests
            above: 5%
        """)
    assert p.field == "checks[0].ratio"
    assert "numerator / denominator" in p.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("signal: errors\n    ratio: errors / requests\n    above: 1", "give exactly one of 'signal' or 'ratio'"),
        ("above: 1", "give exactly one of 'signal' or 'ratio'"),
        ("signal: errors\n    above: 1\n    below: 0", "give exactly one of 'above' or 'below'"),
        ("signal: errors", "give exactly one of 'above' or 'below'"),
    ],
    ids=["both-signal-and-ratio", "neither-signal-nor-ratio", "both-above-and-below", "neither-above-nor-below"],
)
def test_exactly_one_of(body, expected):
    text = "service: x\nchecks:\n  - name: a\n    kind: threshold\n    " + body + "\n"
    p = only_problem(text)
    assert (p.line, p.field, p.message) == (3, "checks[0]", expected)


def test_duplicate_check_names():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: 1
          - name: a
            kind: threshold
            signal: errors
            above: 2
        """)
    assert str(p) == "r.yaml:7: checks[1].name: duplicate check name 'a'"


def test_unknown_kind_names_the_kind_field():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            kind: magic
            signal: errors
            above: 1
        """)
    assert (p.line, p.field) == (4, "checks[0].kind")
    assert "'magic'" in p.message
    assert "threshold" in p.message


def test_missing_kind_is_reported_as_a_missing_field():
    p = only_problem("""\
        service: x
        checks:
          - name: a
            signal: errors
            above: 1
        """)
    assert (p.line, p.field) == (3, "checks[0].kind")
    assert "missing" in p.message


def test_missing_service():
    p = only_problem("checks: []\n")
    assert str(p) == "r.yaml:1: service: required field is missing"


def test_unknown_placeholder_in_a_query():
    p = only_problem("""\
        service: x
        queries:
          custom:
            promql: 'up{job="{{job}}"}'
        """)
    assert (p.line, p.field) == (4, "queries.custom.promql")
    assert "unknown placeholder {{job}}" in p.message
    assert "{{service}}" in p.message  # lists the known ones


def test_bad_signal_name_in_queries():
    p = only_problem("""\
        service: x
        queries:
          bad-name:
            promql: up
        """)
    assert p.field == "queries"
    assert "bad-name" in p.message


def test_bad_arm_label():
    p = only_problem("""\
        service: x
        arms:
          label: bad-label
        """)
    assert (p.line, p.field) == (3, "arms.label")
    assert "label name" in p.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "hello\n", "", "# only a comment\n", "42\n"])
def test_a_file_that_is_not_a_mapping(text):
    p = only_problem(text)
    assert (p.file, p.line, p.field) == ("r.yaml", 1, "(file)")
    assert "mapping" in p.message


def test_all_problems_of_a_file_are_reported_at_once():
    found = problems_of("""\
        service: x
        checks:
          - name: a
            kind: threshold
            signal: errors
            above: 1
            for: soon
          - name: b
            kind: threshold
            signal: nope
            below: 1
            action: boom
          - name: a
            kind: threshold
            signal: errors
            above: 1
        """)
    assert [(p.line, p.field) for p in found] == [
        (7, "checks[0].for"),
        (10, "checks[1].signal"),
        (12, "checks[1].action"),
        (13, "checks[2].name"),
    ]
    assert all(p.file == "r.yaml" for p in found)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_two_files_for_the_same_service(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    second = write(tmp_path, "b.yaml", "# the same service again\n\n" + VALID)
    with pytest.raises(RuleError) as err:
        load_paths([tmp_path])
    [p] = err.value.problems
    assert (p.file, p.line, p.field) == (str(second), 3, "service")
    assert "'payments'" in p.message
    assert "a.yaml" in p.message


def test_problems_of_every_file_are_reported(tmp_path):
    write(tmp_path, "a.yaml", "service: a\nchecks: 5\n")
    write(tmp_path, "b.yml", "service: b\nbogus: 1\n")
    write(tmp_path, "ignored.txt", "not: a rule file\n")
    with pytest.raises(RuleError) as err:
        load_paths([tmp_path])
    assert [(Path(p.file).name, p.line, p.field) for p in err.value.problems] == [
        ("a.yaml", 2, "checks"), ("b.yml", 2, "bogus")]
    assert str(err.value).splitlines() == [str(p) for p in err.value.problems]


def test_unreadable_file_is_a_problem(tmp_path):
    missing = tmp_path / "gone.yaml"
    with pytest.raises(RuleError) as err:
        load_paths([missing])
    [p] = err.value.problems
    assert (p.file, p.line, p.field) == (str(missing), 1, "(file)")
    assert "cannot read" in p.message


# -- durations and limits -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2m", 120.0), ("1h30m", 5400.0), ("500ms", 0.5), ("1s", 1.0), ("30s", 30.0), ("2m30s", 150.0),
     ("1.5h", 5400.0), ("0.5s", 0.5), (30, 30.0), (2.5, 2.5), ("1h 30m", 5400.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["2 minutes", "90", "", "  ", "m", "ms", "2d", "-1s", -1, True, None, "1m2h"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("5%", 0.05), ("0.5%", 0.005), ("100%", 1.0), ("1s", 1.0), ("250ms", 0.25), ("2m", 120.0), ("0.05", 0.05),
     (0.05, 0.05), (3, 3.0)],
)
def test_parse_number(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["lots", "%", "", "five%", True, None, [1]])
def test_parse_number_rejects(text):
    with pytest.raises(ValueError):
        parse_number(text)


# -- PromQL rendering -------------------------------------------------------------------------------
def test_render_fills_every_placeholder():
    out = render('m{service="{{service}}",{{arm_label}}="{{ arm }}"}[{{window}}]', service="checkout",
                 arm="canary", arm_label="track", window=30)
    assert out == 'm{service="checkout",track="canary"}[30s]'


def test_render_escapes_label_values():
    out = render('m{service="{{service}}",track="{{arm}}"}', service='a"b\\c', arm="line1\nline2")
    assert out == 'm{service="a\\"b\\\\c",track="line1\\nline2"}'
    assert "\n" not in out


def test_render_does_not_reinterpret_placeholders_inside_values():
    out = render('m{service="{{service}}",track="{{arm}}"}', service="{{arm}}", arm="canary")
    assert out == 'm{service="{{arm}}",track="canary"}'


def test_escape_label_value_escapes_backslash_first():
    assert escape_label_value('\\"') == '\\\\\\"'


@pytest.mark.parametrize("label", ["bad-label", "1track", "", 'track"} or vector(1) #', "a b"])
def test_render_rejects_bad_label_names(label):
    with pytest.raises(ValueError, match="label name"):
        render("m{{{arm_label}}=\"{{arm}}\"}", service="s", arm="canary", arm_label=label)


def test_render_rejects_unknown_placeholders():
    with pytest.raises(ValueError, match="unknown placeholder"):
        render("m{job=\"{{job}}\"}", service="s", arm="canary")


@pytest.mark.parametrize(("seconds", "text"), [(30, "30s"), (0.5, "500ms"), (120, "120s"), (1.25, "1250ms")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_duration_rejects_zero():
    with pytest.raises(ValueError):
        format_duration(0)


def test_standard_queries_render():
    for name, query in STANDARD_QUERIES.items():
        out = render(query.promql, service="checkout", arm="canary", window=30)
        assert "{{" not in out, name
        assert 'service="checkout"' in out and 'track="canary"' in out, name


# -- the rule book ------------------------------------------------------------------------------------
def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_rulebook_serves_files_and_falls_back_to_the_default(tmp_path):
    write(tmp_path, "payments.yaml", VALID)
    book = RuleBook([tmp_path])
    assert book.for_service("payments").source == str(tmp_path / "payments.yaml")
    assert book.for_service("other") is DEFAULT_RULESET
    assert set(book.services()) == {"payments"}


def test_rulebook_refuses_to_start_on_invalid_rules(tmp_path):
    write(tmp_path, "bad.yaml", "service: x\nbogus: 1\n")
    with pytest.raises(RuleError):
        RuleBook([tmp_path])


def test_rulebook_reload_keeps_the_last_good_rules(tmp_path):
    path = write(tmp_path, "payments.yaml", VALID)
    book = RuleBook([tmp_path])
    before = book.for_service("payments")

    path.write_text(VALID.replace("above: 5%", "above: lots"), encoding="utf-8")
    _bump_mtime(path)
    problems = book.reload()

    assert [(p.file, p.line, p.field) for p in problems] == [(str(path), 6, "checks[0].above")]
    assert book.last_problems == problems
    assert book.for_service("payments") is before
    assert book.for_service("payments").rules.checks[0].limit == pytest.approx(0.05)


def test_rulebook_reload_picks_up_a_valid_change(tmp_path):
    path = write(tmp_path, "payments.yaml", VALID)
    book = RuleBook([tmp_path])
    path.write_text(VALID.replace("above: 5%", "above: 10%"), encoding="utf-8")
    _bump_mtime(path)
    assert book.reload() == []
    assert book.last_problems == []
    assert book.for_service("payments").rules.checks[0].limit == pytest.approx(0.10)


def test_rulebook_recovers_after_an_invalid_reload(tmp_path):
    path = write(tmp_path, "payments.yaml", VALID)
    book = RuleBook([tmp_path])
    path.write_text("service: payments\nchecks: [\n", encoding="utf-8")
    _bump_mtime(path)
    assert book.reload()
    assert book.for_service("payments").rules.checks[0].limit == pytest.approx(0.05)
    write(tmp_path, "payments.yaml", VALID.replace("5%", "7%"))
    _bump_mtime(path)
    assert book.reload() == []
    assert book.last_problems == []
    assert book.for_service("payments").rules.checks[0].limit == pytest.approx(0.07)


def test_rulebook_reload_only_if_changed(tmp_path):
    path = write(tmp_path, "payments.yaml", VALID)
    book = RuleBook([tmp_path])
    before = book.for_service("payments")
    assert book.reload(only_if_changed=True) == []
    assert book.for_service("payments") is before  # nothing changed: nothing re-read

    write(tmp_path, "payments.yaml", VALID.replace("5%", "8%"))
    _bump_mtime(path)
    assert book.reload(only_if_changed=True) == []
    assert book.for_service("payments").rules.checks[0].limit == pytest.approx(0.08)


def test_rulebook_picks_up_a_new_file_and_a_removed_one(tmp_path):
    write(tmp_path, "payments.yaml", VALID)
    book = RuleBook([tmp_path])
    extra = write(tmp_path, "search.yaml", VALID.replace("payments", "search"))
    assert book.reload(only_if_changed=True) == []
    assert set(book.services()) == {"payments", "search"}
    extra.unlink()
    assert book.reload(only_if_changed=True) == []
    assert set(book.services()) == {"payments"}


# -- issue 17, defect 8: what `rules check` let through, and how it says what is wrong ---------------------
def check_with(**fields: str) -> str:
    """A one-check rule file; `fields` override or add lines of the check (None removes one)."""
    body = {"name": "a", "kind": "threshold", "ratio": "errors / requests", "above": "5%", "action": "rollback"}
    body.update(fields)
    lines = "".join(f"    {k}: {v}\n" for k, v in body.items() if v is not None)
    return "service: x\nchecks:\n  - " + lines[4:]


def test_a_zero_window_is_refused():
    p = only_problem(check_with(window="0s"))
    assert (p.line, p.field) == (8, "checks[0].window")
    assert "longer than 0" in p.message


@pytest.mark.parametrize(("field", "limit"), [("above", "200%"), ("above", "100%"), ("above", "1.5"), ("below", "0%"),
                                              ("below", "-5%"), ("above", "-1%")])
def test_a_ratio_limit_outside_0_to_100_percent_is_refused(field, limit):
    p = only_problem(check_with(**{"above": None, field: limit}))
    assert (p.line, p.field) == (6 if field == "above" else 7, f"checks[0].{field}")  # a new key comes last
    assert "between 0 and 100%" in p.message and limit in p.message


def test_a_signal_limit_may_be_any_number():
    parse_text(check_with(ratio=None, signal="p99_seconds", above="2s"), "r.yaml")
    parse_text(check_with(ratio=None, signal="memory_bytes", above="2000000000"), "r.yaml")


@pytest.mark.parametrize("kind_lines", [
    {},
    {"kind": "compare", "above": None},
    {"kind": "baseline", "ratio": None, "signal": "requests", "above": None},
])
def test_scale_without_replicas_is_refused(kind_lines):
    p = only_problem(check_with(action="scale", **kind_lines))
    assert p.field.startswith("checks[0]")
    assert "replicas" in p.message and "scale" in p.message
    parse_text(check_with(action="scale", replicas="1", **kind_lines), "r.yaml")  # with it: fine


def test_a_check_without_action_rolls_back_as_documented():
    rules = parse_text(check_with(action=None), "r.yaml")
    assert rules.checks[0].action == "rollback"
    rule_files_section = (REPO / "README.md").read_text().split("## Rule files", 1)[1].split("\n## ", 1)[0]
    assert "without `action`" in rule_files_section


@pytest.mark.parametrize(("text", "line", "words"), [
    ("service: d\nchecks:\n  - name: e\n    kind: threshold\n   ratio: errors / requests\n    above: 5%\n", 5,
     "indented by 3 spaces"),
    ("service: d\nchecks:\n  - name: e\n    kind: threshold\n      ratio: errors / requests\n    above: 5%\n", 5,
     "indented"),
    ("service: x\nqueries:\n  q:\n    promql: up\n\tbad: 1\n", 5, "tab"),
    ("service: x\nchecks\n  - name: a\n", 2, "':'"),
    ("service: \"x\nchecks: []\n", 1, "never closed"),
    ("service: x\nchecks:\n  - name: a: b\n", 3, "quote"),
])
def test_yaml_mistakes_are_told_in_plain_words(text, line, words):
    p = only_problem(text)
    assert (p.line, p.field) == (line, "(yaml)")
    assert p.message.startswith("malformed YAML: ") and words in p.message, p.message
    for raw in ("<block", "mapping values are not allowed", "cannot start any token", "simple key"):
        assert raw not in p.message, p.message


@pytest.mark.parametrize(("text", "value"), [("250 ms", 0.25), ("2 %", 0.02), ("1 s", 1.0), ("2 m", 120.0),
                                             ("250ms", 0.25), ("2%", 0.02)])
def test_a_space_between_number_and_unit_is_accepted_everywhere(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize(("text", "seconds"), [("30 s", 30.0), ("500 ms", 0.5), ("1 h 30 m", 5400.0)])
def test_a_duration_with_spaces(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_limits_with_spaces_in_a_rule_file():
    rules = parse_text(check_with(ratio=None, signal="p99_seconds", above="250 ms", **{"for": "2 m"}), "r.yaml")
    assert (rules.checks[0].limit, rules.checks[0].for_) == (pytest.approx(0.25), 120.0)


def test_confidence_and_alpha_accept_percentages():
    assert parse_text(check_with(confidence="95%"), "r.yaml").checks[0].confidence == pytest.approx(0.95)
    compare = parse_text(check_with(kind="compare", above=None, alpha="1%"), "r.yaml").checks[0]
    assert compare.alpha == pytest.approx(0.01)
    p = only_problem(check_with(confidence="95"))
    assert p.field == "checks[0].confidence" and "0.95 or 95%" in p.message


@pytest.mark.parametrize(("text", "field", "suggestion"), [
    (check_with(above=None, abov="5%"), "checks[0].abov", "did you mean 'above'?"),
    (check_with(windw="30s"), "checks[0].windw", "did you mean 'window'?"),
    ("service: x\nchekcs: []\n", "chekcs", "did you mean 'checks'?"),
    ("service: x\narms: {lable: version}\n", "arms.lable", "did you mean 'label'?"),
    (check_with(sigma="3"), "checks[0].sigma", "a field of kind: baseline checks"),
])
def test_unknown_fields_get_a_suggestion(text, field, suggestion):
    found = problems_of(text)
    [p] = [p for p in found if p.field == field]
    assert p.message.startswith("unknown field") and suggestion in p.message, p.message


def test_rules_check_refuses_an_empty_folder(tmp_path):
    from typer.testing import CliRunner

    from guardian.cli import app

    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path}:0: (file): no rule files" in " ".join(result.output.split())


def test_rules_check_says_what_a_check_without_action_does(tmp_path):
    from typer.testing import CliRunner

    from guardian.cli import app

    write(tmp_path, "x.yaml", check_with(action=None))
    result = CliRunner().invoke(app, ["rules", "check", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "a: threshold on errors / requests, fails -> rollback (no action given: the default)" in out, out


# -- power-aware promotion: min_detectable, max_analysis, underpowered (docs/rules.md, "Power") --------------
def test_power_fields_parse_with_their_defaults():
    rf = parse_text(textwrap.dedent("""\
        service: x
        max_analysis: 10m
        underpowered: pause
        checks:
          - {name: e, kind: compare, ratio: errors / requests, min_detectable: 3x}
          - {name: s, kind: compare, ratio: slow / requests, tolerance: 1.5, min_detectable: "×4"}
          - {name: p, kind: compare, signal: p99_seconds, min_detectable: 40%}
          - {name: q, kind: compare, signal: p99_seconds, tolerance: 30%}
          - {name: r, kind: compare, ratio: errors / requests}
        """), "x.yaml")
    assert (rf.max_analysis, rf.underpowered) == (600.0, "pause")
    assert [c.effective_min_detectable for c in rf.checks] == pytest.approx([3.0, 4.0, 0.4, 0.375, 2.0])
    default = parse_text(VALID, "v.yaml")
    assert (default.max_analysis, default.underpowered) == (None, "promote")
    assert default.max_analysis_for(60.0) == 60.0  # promote: no extension unless asked for
    assert parse_text("service: x\nunderpowered: pause\n", "p.yaml").max_analysis_for(60.0) == 180.0
    assert rf.max_analysis_for(60.0) == 600.0
    assert rf.max_analysis_for(900.0) == 900.0  # never shorter than the step's own analysis


@pytest.mark.parametrize(("line", "field", "words"), [
    ("underpowered: maybe", "underpowered", "'pause' or 'promote'"),
    ("max_analysis: soon", "max_analysis", "bad duration 'soon'"),
    ("max_analysis: 0s", "max_analysis", "longer than 0s"),
])
def test_bad_power_settings_name_their_line_and_field(line, field, words):
    p = only_problem(f"service: x\n{line}\nchecks:\n  - {{name: e, kind: compare, ratio: errors / requests}}\n")
    assert (p.line, p.field) == (2, field)
    assert words in p.message, p.message


@pytest.mark.parametrize(("check", "words"), [
    ("ratio: errors / requests, min_detectable: 1", "not above the check's tolerance ×1"),
    ("ratio: errors / requests, tolerance: 1.5, min_detectable: 1.2x", "not above the check's tolerance ×1.5"),
    ("ratio: errors / requests, min_detectable: lots", "expected a ratio such as 2, 2x or ×2"),
    ("signal: p99_seconds, min_detectable: 10%", "below the check's margin (tolerance) 20%"),
    ("signal: requests, test: collapse, min_detectable: 2", "applies to the rate and sign tests"),
])
def test_a_min_detectable_no_test_could_see_is_refused_with_its_line(check, words):
    p = only_problem(f"service: x\nchecks:\n  - {{name: e, kind: compare, {check}}}\n")
    assert (p.line, p.field) == (3, "checks[0].min_detectable")
    assert words in p.message, p.message


# -- approval steps: approve_before, approval_timeout (docs/rules.md, "Approval") ---------------------------------
def test_approval_fields_parse_with_their_defaults():
    rf = parse_text("service: x\napprove_before: promote\napproval_timeout: 2h\n", "a.yaml")
    assert (rf.approve_before, rf.approval_timeout) == ("promote", 7200.0)
    default = parse_text(VALID, "v.yaml")
    assert (default.approve_before, default.approval_timeout) == (None, 3600.0)


@pytest.mark.parametrize(("line", "field", "words"), [
    ("approve_before: deploy", "approve_before", "'promote'"),
    ("approval_timeout: later", "approval_timeout", "bad duration 'later'"),
    ("approval_timeout: -5", "approval_timeout", "negative"),
])
def test_bad_approval_settings_name_their_line_and_field(line, field, words):
    p = only_problem(f"service: x\n{line}\n")
    assert (p.line, p.field) == (2, field)
    assert words in p.message, p.message
