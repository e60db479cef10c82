"""BatchingSource: one PromQL query per signal, tick window and arm label for all rollouts, split back.

A template whose only uses of `{{service}}` / `{{arm}}` are the equality matchers of its selectors, and
whose aggregations can be regrouped, gets a *batch form* (`batch_shape`): the two matchers become
`service=~"s1|s2|…"` and `{{arm_label}}=~"canary|stable|…"` (regex-escaped values) and every
aggregation keeps both labels (`sum by (le)` -> `sum by (le, service, {{arm_label}})`, `sum(x)` ->
`sum by (service, {{arm_label}}) (x)`; `sum without (code)` keeps them already). Every series of the
answer then belongs to exactly one (service, arm) and is the series the per-rollout query would have
returned, so each rollout's value is read from its group with PrometheusSource's own rules
(`counter_value`: increase summed over series, resets handled; `gauge_value`: one series or NoData).
A service missing from an answer is NoData for it; a failed batch is SourceUnavailable for all its
rollouts. Anything else (functions that join or relabel series, `on()` joins with group_left,
grouping after the expression, selectors without both matchers, empty label values) is fetched per
rollout by the wrapped source; the reason is logged once per template.

Which services a batch asks for: those `plan()`ned for that window (the scheduler plans every due
rollout before starting their ticks) plus the one asking; for a window nobody planned (ticks running late reach
the next window before their pass plans it, or catch up on one they missed), those of the newest window of the
same template, arm label and length. The newest 6 windows of each are kept, so ticks up to 6 windows late find
theirs answered: each asking alone for its own window (a query per late tick) made lag feed on itself.
Concurrent ticks asking for a window a batch in flight covers wait for it (single-flight,
sources/single_flight.py) and share its answer; answers are kept for the recent windows only, failures for
`failure_ttl` seconds (so a dead Prometheus is not asked once per rollout).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from guardian.domain import SignalType
from guardian.errors import NotBatchable
from guardian.rules.promql import _PLACEHOLDER, escape_label_value, format_duration
from guardian.sources import ArmSelector, SignalQuery
from guardian.sources.prometheus import PrometheusSource, counter_value, gauge_value
from guardian.sources.single_flight import Sets, SingleFlight
from guardian.sources.wrapping import Wrapping

_S = {"service": "__rg_service__", "arm": "__rg_arm__", "arm_label": "__rg_arm_label__", "window": "__rg_window__"}
_SERVICES, _ARMS = "__rg_services__", "__rg_arms__"
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<matchers>\{(?:[^{}"'`]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})
  | (?P<num>(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?:[a-zA-Z]+\d*)*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,()@])
""", re.VERBOSE)
_MATCHER = re.compile(r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*(,|$)""")
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar"}
_PER_SERIES = {  # functions that map each series on its own (labels kept, nothing joined)
    "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "resets", "changes",
    "histogram_quantile", "histogram_fraction", "histogram_count", "histogram_sum", "histogram_avg",
    "histogram_stddev", "histogram_stdvar", "abs", "ceil", "floor", "round", "exp", "ln", "log2", "log10",
    "sqrt", "sgn", "clamp", "clamp_min", "clamp_max", "timestamp", "holt_winters", "double_exponential_smoothing",
    "sort", "sort_desc", "time", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "mad_over_time",
}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}


@dataclass(frozen=True)
class BatchShape:
    """A template's batch form: `template` with the service and arm matchers as regex placeholders."""

    template: str
    service_label: str
    arm_label: str  # a label name, or the {{arm_label}} placeholder's stand-in

    def render(self, services: Iterable[str], arms: Iterable[str], arm_label: str, window: float) -> str:
        def alternatives(values: Iterable[str]) -> str:
            return '"' + escape_label_value("|".join(regex_escape(v) for v in sorted(values))) + '"'

        return (self.template.replace(f'"{_SERVICES}"', alternatives(services))
                .replace(f'"{_ARMS}"', alternatives(arms))
                .replace(_S["arm_label"], arm_label).replace(_S["window"], format_duration(window)))

    def label_of_arm(self, arm_label: str) -> str:
        return arm_label if self.arm_label == _S["arm_label"] else self.arm_label


def regex_escape(value: str) -> str:
    """A literal for Prometheus' (RE2) regex: only its metacharacters escaped (RE2 rejects `\\ `, `\\#`)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value)


def batch_shape(template: str) -> BatchShape:
    """The template's batch form, or NotBatchable saying why it must be asked per rollout."""
    if any(s in template for s in (*_S.values(), _SERVICES, _ARMS)) or "#" in template:
        raise NotBatchable("it contains a comment or a reserved name")
    text = _PLACEHOLDER.sub(lambda m: _S.get(m.group(1), m.group(0)), template)
    tokens: list[list[str]] = []  # [kind, text]
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise NotBatchable(f"cannot read it at {text[pos:pos + 20]!r}")
        tokens.append([m.lastgroup or "", m.group(0)])
        pos = m.end()
    sig = [i for i, (kind, _) in enumerate(tokens) if kind != "ws"]
    labels = _selector_labels([tokens[i][1] for i in sig if tokens[i][0] == "matchers"])
    svc, arm = labels

    def at(k: int) -> tuple[str, str]:
        return (tokens[sig[k]][0], tokens[sig[k]][1]) if k < len(sig) else ("", "")

    def label_list(k: int) -> tuple[list[str], int]:
        """The labels of a `(a, b)` list starting at significant token k; and the index after it."""
        if at(k)[1] != "(":
            raise NotBatchable("a grouping clause without its label list")
        names, k = [], k + 1
        while at(k)[1] != ")":
            kind, word = at(k)
            if kind == "ident":
                names.append(word)
            elif word != ",":
                raise NotBatchable(f"unexpected {word!r} in a label list")
            k += 1
        return names, k + 1

    def set_list(start: int, end: int, names: list[str]) -> None:  # replace tokens of sig[start..end) by the list
        for k in range(start, end):
            tokens[sig[k]][1] = ""
        tokens[sig[start]][1] = "(" + ", ".join(names) + ")"

    def closing(k: int) -> int:  # the significant index of the ")" matching the "(" at k
        depth = 0
        for j in range(k, len(sig)):
            word = at(j)[1]
            depth += word == "("
            depth -= word == ")"
            if depth == 0:
                return j
        raise NotBatchable("unbalanced parentheses")

    k = 0
    while k < len(sig):
        kind, word = at(k)
        low = word.lower()
        if kind == "str" and any(s in word for s in _S.values()):
            raise NotBatchable("{{service}} or {{arm}} outside a selector's matchers")
        if kind == "range" and (_S["service"] in word or _S["arm"] in word):
            raise NotBatchable("{{service}} or {{arm}} inside a range")
        if kind == "matchers":
            tokens[sig[k]][1] = _rewrite_matchers(word)
        elif kind == "ident":
            nxt = at(k + 1)
            if low in AGGREGATIONS:
                if nxt[1].lower() in ("by", "without"):
                    names, after = label_list(k + 2)
                    if nxt[1].lower() == "without":
                        if svc in names or arm in names:
                            raise NotBatchable(f"`{word} without` drops the service or arm label")
                    else:
                        set_list(k + 2, after, names + [n for n in labels if n not in names])
                    body = after
                else:
                    body = k + 1
                    tokens[sig[k]][1] = f"{word} by ({svc}, {arm}) "
                if at(body)[1] != "(":
                    raise NotBatchable(f"{word} without its expression in parentheses")
                if at(closing(body) + 1)[1].lower() in ("by", "without"):
                    raise NotBatchable(f"a grouping clause after {word}(...): write `{word} by (...) (...)`")
                k = body
                continue
            if low in ("group_left", "group_right", "by", "without"):
                raise NotBatchable(f"`{word}` (a many-to-one join or a trailing grouping clause)")
            if nxt[1] == "(" and low not in _KEYWORDS and low not in ("on", "ignoring"):
                if low not in _PER_SERIES:
                    raise NotBatchable(f"{word}() may join, relabel or drop series")
            elif low == "on":
                names, after = label_list(k + 1)
                set_list(k + 1, after, names + [n for n in labels if n not in names])
                k = after
                continue
            elif low == "ignoring":
                names, after = label_list(k + 1)
                if svc in names or arm in names:
                    raise NotBatchable("`ignoring` the service or arm label")
                k = after
                continue
            elif low in _KEYWORDS:
                pass
            elif nxt[0] != "matchers":
                raise NotBatchable(f"the selector {word} has no service and arm matchers")
        k += 1
    return BatchShape("".join(t[1] for t in tokens), svc, arm)


def _parse_matchers(block: str) -> list[tuple[str, str, str]]:
    inner, out, pos = block[1:-1], [], 0
    while inner[pos:].strip():
        m = _MATCHER.match(inner, pos)
        if m is None:
            raise NotBatchable(f"cannot read the matchers {block}")
        out.append((m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    return out


def _selector_labels(blocks: list[str]) -> tuple[str, str]:
    """The label names matched against {{service}} and {{arm}}: the same in every selector, or NotBatchable."""
    found: set[tuple[str, str]] = set()
    for block in blocks:
        matchers = _parse_matchers(block)
        svc = [name for name, op, value in matchers if op == "=" and value == f'"{_S["service"]}"']
        arm = [name for name, op, value in matchers if op == "=" and value == f'"{_S["arm"]}"']
        if len(svc) != 1 or len(arm) != 1:
            raise NotBatchable(f"a selector without exactly one service=\"{{{{service}}}}\" and one "
                               f"arm=\"{{{{arm}}}}\" matcher: {block}")
        found.add((svc[0], arm[0]))
    if len(found) != 1:
        raise NotBatchable("selectors disagree on the service or arm label" if found else "no selector")
    return found.pop()


def _rewrite_matchers(block: str) -> str:
    parts = []
    for name, op, value in _parse_matchers(block):
        if value == f'"{_S["service"]}"' and op == "=":
            op, value = "=~", f'"{_SERVICES}"'
        elif value == f'"{_S["arm"]}"' and op == "=":
            op, value = "=~", f'"{_ARMS}"'
        elif _S["service"] in value or _S["arm"] in value:
            raise NotBatchable(f"{{{{service}}}} or {{{{arm}}}} in a matcher other than `label=\"...\"`: {block}")
        parts.append(f"{name}{op}{value}")
    return "{" + ",".join(parts) + "}"


Key = tuple[str, SignalType, str, int, int]  # template, type, arm label, window start and end (ms)
Answer = tuple[str, dict[tuple[str, str], list[dict[str, Any]]]]  # the batch query; its series by (service, arm value)


def _kin(key: Key) -> tuple[tuple[str, SignalType, str, int], int]:
    """A key's kind (template, type, arm label, window length) and time (its window's end). A window nobody planned
    and nobody asked for yet (a late tick's next one, or one it catches up on) is asked for the services the newest
    window of its kind was: the other late ticks want it too. A pre-rollout window is of another length: never asked
    for the ticks' services, nor crowding their windows out of the cache."""
    return (*key[:3], key[4] - key[3]), key[4]


class BatchingSource(Wrapping):
    """A MetricSource over a PrometheusSource that asks once per (signal template, window, arm label)."""

    def __init__(self, inner: PrometheusSource, *, failure_ttl: float = 2.0, keep_windows: int = 6) -> None:
        self.inner = inner
        self.failure_ttl, self.keep_windows = failure_ttl, keep_windows
        self._shapes: dict[str, BatchShape | None] = {}
        # a key's scope: Sets(services, arm values); the newest `keep_windows` windows of each (template, arm label,
        # window length): ticks running up to that many windows late still find theirs (else each would ask alone)
        self._flights: SingleFlight[Key, Sets, Answer] = SingleFlight(
            prune=lambda flights: flights.keep_newest(self.keep_windows, _kin))
        self.single_queries = 0  # queries sent per rollout (fallbacks)

    @property
    def batch_queries(self) -> int:
        """Batch queries this wrapper sent."""
        return self._flights.requests

    def render(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> str:
        return self.inner.render(query, service, arm, start, end)

    def instant_result(self, promql: str, at: float) -> list[dict[str, Any]]:
        return self.inner.instant_result(promql, at)

    def shape(self, query: SignalQuery) -> BatchShape | None:
        """The signal's batch form (cached), None when it is asked per rollout (logged once, with why)."""
        try:
            return self._shapes[query.promql]
        except KeyError:
            pass
        try:
            shape: BatchShape | None = batch_shape(query.promql)
        except NotBatchable as e:
            logger.info("signal {} is queried per rollout, not batched: {}", query.signal, e)
            shape = None
        self._shapes[query.promql] = shape
        return shape

    def _key(self, query: SignalQuery, arm: ArmSelector, start: float, end: float) -> Key:
        return query.promql, query.type, arm.label, round(start * 1000), round(end * 1000)

    def plan(self, requests: Iterable[tuple[SignalQuery, str, ArmSelector, float, float]]) -> None:
        """Fetches about to be made: the first batch query of each window asks for all of them."""
        wanted: dict[Key, tuple[set[str], set[str]]] = {}  # one scope per key (not a Sets per fetch, then merged)
        for query, service, arm, start, end in requests:
            if service and arm.label_value and self.shape(query) is not None:
                services, arms = wanted.setdefault(self._key(query, arm, start, end), (set(), set()))
                services.add(service)
                arms.add(arm.label_value)
        self._flights.plan((key, Sets.of(services, arms), None) for key, (services, arms) in wanted.items())

    def fetch(self, query: SignalQuery, service: str, arm: ArmSelector, start: float, end: float) -> float:
        if end <= start:
            raise ValueError(f"empty window: start={start} end={end}")
        shape = self.shape(query)
        if shape is None or not service or not arm.label_value:
            with self._flights.lock:
                self.single_queries += 1
            return self.inner.fetch(query, service, arm, start, end)
        key = self._key(query, arm, start, end)
        window = max(end - start, self.inner.min_window)
        promql, groups = self._flights.get(
            {key: Sets.of({service}, {arm.label_value})},
            lambda asked, _: {key: self._ask(shape, query.type, arm.label, asked[key], window, start, end)},
            failure_ttl=self.failure_ttl, wait=self.inner.timeout * 2 + 5, kin=_kin,
            failed=lambda e: f"batch query for {query.signal} failed: {e!r}",
            late=lambda _, scope: f"the batch query for {query.signal} did not finish: "
                                  f"{shape.render(*scope.sets, arm.label, window)}")[key]
        where = f"{query.signal} of {service}/{arm.arm}"
        series = groups.get((service, arm.label_value), [])
        if query.type == SignalType.COUNTER:
            return counter_value(series, where, promql, start, end)
        return gauge_value(series, where, promql)

    def _ask(self, shape: BatchShape, kind: SignalType, arm_label: str, scope: Sets, window: float,
             start: float, end: float) -> Answer:
        """The batch query for these services and arms, and its series split by (service, arm value)."""
        services, arms = scope.sets
        promql = shape.render(services, arms, arm_label, window)
        if kind == SignalType.COUNTER:
            result = self.inner.range_result(promql, start, end)
        else:
            result = self.inner.instant_result(promql, end)
        label = shape.label_of_arm(arm_label)
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for series in result:
            metric = series.get("metric", {})
            groups.setdefault((metric.get(shape.service_label, ""), metric.get(label, "")), []).append(series)
        return promql, groups


def batching(source: Any) -> Any:
    """`source` wrapped in a BatchingSource when it is a PrometheusSource (others are returned as they are)."""
    return BatchingSource(source) if isinstance(source, PrometheusSource) else source
