"""What is wrong with a service's metrics, before a rollout is judged on them: `guardian doctor SERVICE` and
the preflight of `POST /v1/rollouts`.

For every signal the service's policy reads (`needs`: the signals of its checks, and for which arms; a
signal read only by optional checks does not gate), and for each arm, `examine` asks the service's store,
through an `Examiner` (`PromQLExaminer` here; the other stores' in sources/doctor_<store>.py, and
sources/doctor_stores.py's `examiner_for` finds the service's store behind a router):

1. is the arm's data for the signal there at all (`present`)? For Prometheus and VictoriaMetrics the
   signal's query, as the guard renders it, as an instant query (a counter exists from its first scrape on,
   no traffic needed); for InfluxDB, CloudWatch and Datadog the measurements, metrics or series the source
   reads the standard signal from (each sources/doctor_<store>.py says how it is asked). If not, `why` finds
   out, in the store's own terms and in this order: nothing of that name at all (the exporter is not scraped, the
   collector does not send it); none for `service` SERVICE (listing the services that have it); no arm label
   (listing the labels there are) or not the arm's value (listing the values); a histogram without the
   bucket the query reads (listing the buckets it has, and how to set the objective);
2. with `values`, its value over the last `window` seconds as a tick would read it: a counter that did
   not move (no traffic on a denominator, e.g. `requests`) is `idle`, a gauge with no value (a p99 of no
   requests) too.

Each finding says what to do. A gating signal with no data is `missing` (the preflight refuses the start, or
starts it paused with `allow_missing`); for optional checks it `abstains`; the canary of a rollout the
guardian is about to deploy is `pending` (it does not run yet: every tick checks it). A store that refuses
or cannot be reached is `unavailable` with its reason (`guardian doctor` exits 2: nothing was checked), never
a pass; `unchecked` only where an arm's label value is not known.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from guardian.domain import ARMS, SignalType
from guardian.errors import NoData, SourceUnavailable
from guardian.rules.loader import RuleSet
from guardian.rules.promql import escape_label_value
from guardian.sources import ArmSelector, Introspectable, SignalQuery

Status = Literal["ok", "idle", "missing", "abstains", "pending", "unavailable", "unchecked"]
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_LE = re.compile(r'\ble\s*=\s*"([^"]*)"')
_SHOWN = 12  # label values listed at most


@dataclass(frozen=True)
class Need:
    """A signal the policy reads: from which arms, whether a non-optional check reads it, and which checks."""

    signal: str
    arms: tuple[str, ...]
    gating: bool
    checks: tuple[str, ...]
    denominator: bool  # counted as samples (`requests`): not moving means no traffic


@dataclass(frozen=True)
class Finding:
    signal: str
    arm: str
    status: Status
    detail: str
    gating: bool
    checks: tuple[str, ...]
    value: float | None = None

    @property
    def blocking(self) -> bool:
        """A gating signal without a series: a rollout judged on it could only ever be inconclusive."""
        return self.status == "missing" and self.gating

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "arm": self.arm, "status": self.status, "detail": self.detail,
                "gating": self.gating, "checks": list(self.checks), "value": self.value, "blocking": self.blocking}


def needs(ruleset: RuleSet) -> list[Need]:
    """The signals the policy's checks read (pure), in the order the checks name them."""
    found: dict[str, dict[str, Any]] = {}
    for check in ruleset.rules.checks:
        arm = getattr(check, "arm", "total")
        arms = ARMS if getattr(check, "kind", "") == "compare" or arm == "total" else (arm,)
        signals = list(check.signals)
        dens = {signals[1]} if getattr(check, "ratio", None) else set()
        if getattr(check, "kind", "") == "threshold" and not check.ratio and check.min_samples > 0:
            signals.append(check.samples_from)
            dens.add(check.samples_from)
        for signal in signals:
            n = found.setdefault(signal, {"arms": [], "gating": False, "checks": [], "den": False})
            n["arms"] += [a for a in arms if a not in n["arms"]]
            n["gating"] |= not getattr(check, "optional", False)
            n["checks"].append(check.name)
            n["den"] |= signal in dens or (signal == "requests" and getattr(check, "kind_of_test", "") == "collapse")
    return [Need(s, tuple(a for a in ARMS if a in n["arms"]), n["gating"], tuple(dict.fromkeys(n["checks"])),
                 n["den"]) for s, n in found.items()]


class Examiner(Protocol):
    """How `examine` asks one store about a signal of one arm (PromQL stores: `PromQLExaminer`; each store's own:
    sources/doctor_<store>.py, found by sources/doctor_stores.py `examiner_for`)."""

    def describe(self) -> str:
        """The store, for people: "InfluxDB at http://…, database telegraf"."""
        ...

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        """Does the store hold this arm's data for the signal (not necessarily within the window)? Raises
        SourceUnavailable."""
        ...

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        """Why it does not, in words that say what to change (never raises: a failure to find out is said)."""
        ...

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        """The signal's value over the last `window` seconds as a tick reads it. Raises NoData or
        SourceUnavailable."""
        ...

    def notes(self) -> list[str]:
        """What is wrong with the store itself, whatever the service (e.g. a setting that hides new samples)."""
        ...


class PromQLExaminer:
    """Prometheus and VictoriaMetrics: the rendered query as an instant query; `diagnose` for why not."""

    def __init__(self, source: Introspectable) -> None:
        self.source = source

    def describe(self) -> str:
        return f"{getattr(self.source, 'product', 'Prometheus')} at {getattr(self.source, 'safe_url', '?')}"

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        return bool(self.source.instant_result(self.source.render(query, service, arm, now - window, now), now))

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        promql = self.source.render(query, service, arm, now - window, now)
        try:
            return diagnose(self.source, promql, service, arm, now)
        except SourceUnavailable as e:
            return f"(could not find out why: {e})"

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        return self.source.fetch(query, service, arm, now - window, now)

    def notes(self) -> list[str]:
        return []


class Unreachable:
    """A store that cannot be asked at all (a rule file naming a store that is not configured): every finding
    `unavailable` with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def describe(self) -> str:
        return "no store"

    def present(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> bool:
        raise SourceUnavailable(self.reason)

    def why(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> str:
        return self.reason

    def value(self, query: SignalQuery, service: str, arm: ArmSelector, now: float, window: float) -> float:
        raise SourceUnavailable(self.reason)

    def notes(self) -> list[str]:
        return []


def examine(source: Introspectable | Examiner, ruleset: RuleSet, service: str, selectors: Mapping[str, ArmSelector],
            now: float, *, window: float = 60.0, values: bool = True, canary_deployed: bool = True,
            unresolved: Mapping[str, str] | None = None) -> list[Finding]:
    """One finding per (signal, arm) the policy needs. `source`: a PromQL store, or an `Examiner` of any store
    (sources/doctor_stores.py `examiner_for` finds the service's). `selectors`: each arm's label and value (an arm
    missing there is `unchecked`, with `unresolved[arm]` as the reason); `canary_deployed` False: the canary of a
    rollout about to start, not running yet (`pending` where it has no data)."""
    examiner: Examiner = PromQLExaminer(source) if isinstance(source, Introspectable) else source
    down: str | None = None  # the store stopped answering: the rest is not asked (no timeout each)
    out: list[Finding] = []
    for need in needs(ruleset):
        query = ruleset.queries.get(need.signal)
        for arm in need.arms:
            common = {"signal": need.signal, "arm": arm, "gating": need.gating, "checks": need.checks}
            if down is not None:
                out.append(Finding(status="unavailable", detail=f"not asked: {down}", **common))
                continue
            if query is None:
                out.append(Finding(status="missing", detail=f"no query defines {need.signal!r} (add it under "
                                   "`queries:` in the rule file)", **common))
                continue
            if arm not in selectors:
                why = (unresolved or {}).get(arm, "its label value is not known")
                out.append(Finding(status="unchecked", detail=why, **common))
                continue
            q = SignalQuery(need.signal, query.type, query.promql)
            found = _examine_one(examiner, q, service, selectors[arm], now, window, values, need,
                                 canary_deployed or arm != "canary", common)
            down = found.detail if found.status == "unavailable" else None
            out.append(found)
    return out


def _examine_one(examiner: Examiner, q: SignalQuery, service: str, sel: ArmSelector, now: float,
                 window: float, values: bool, need: Need, deployed: bool, common: dict[str, Any]) -> Finding:
    try:
        exists = examiner.present(q, service, sel, now, window)
    except SourceUnavailable as e:
        return Finding(status="unavailable", detail=str(e), **common)
    if not exists:
        if not deployed:
            return Finding(status="pending", detail="the canary does not run yet: every tick checks it once it "
                           "does", **common)
        status: Status = "missing" if need.gating else "abstains"
        return Finding(status=status, detail=examiner.why(q, service, sel, now, window), **common)
    if not values:
        return Finding(status="ok", detail="series found", **common)
    try:
        value = examiner.value(q, service, sel, now, window)
    except NoData as e:
        return Finding(status="idle", detail=f"series found, but no value in the last {window:g}s ({e}): no "
                       "traffic on this arm?", **common)
    except SourceUnavailable as e:
        return Finding(status="unavailable", detail=str(e), **common)
    if q.type is SignalType.COUNTER and value == 0 and need.denominator:
        return Finding(status="idle", value=value, detail=f"did not move in the last {window:g}s: no traffic on "
                       "this arm? (a rollout's checks wait for it: inconclusive, never a pass)", **common)
    return Finding(status="ok", value=value, detail=_shown(q, value, window), **common)


def _shown(q: SignalQuery, value: float, window: float) -> str:
    """A value for people: a counter's increase and rate, a gauge in its unit where its name says it."""
    if q.type is SignalType.COUNTER:
        return f"{value:.4g} in {window:g}s ({value / window:.3g}/s)"
    if q.signal.endswith("_seconds"):
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    if q.signal.endswith("_bytes"):
        return f"{value / 2**20:.4g} MiB"
    return f"{value:.4g}"


def diagnose(source: Introspectable, promql: str, service: str, sel: ArmSelector, at: float) -> str:
    """Why `promql` returns no series for this service and arm, in words that say what to change."""
    svc = escape_label_value(service)
    for metric, matchers in _selectors(promql):
        if not _ask(source, f"count({metric})", at):
            return (f"{getattr(source, 'product', 'Prometheus')} has no series named {metric} at all: is the "
                    "exporter scraped (a target for it in prometheus.yml) and does it export that metric?")
        services = _values(source, "service", metric, at)
        if services is None:
            return (f"{metric} has no `service` label: give its targets `service: \"{service}\"` (a `labels:` entry "
                    "in the scrape config, or relabelling)")
        if service not in services:
            return (f"no {metric} series has service=\"{service}\"; the services that have it: "
                    f"{listing(services)} (label the targets with service=\"{service}\", or name the rule file's "
                    "service after one of these)")
        own = f'{metric}{{service="{svc}"}}'
        arms = _values(source, sel.label, own, at)
        if arms is None:
            labels = sorted({k for r in source.instant_result(f"topk(1, {own})", at) for k in r.get("metric", {})}
                            - {"__name__"})
            return (f"{own} has no `{sel.label}` label to tell the arms apart (its labels: {', '.join(labels)}): "
                    f"label the {sel.arm}'s targets {sel.label}=\"{sel.label_value}\", or name the label that does "
                    "in the rule file's `arms:`")
        if sel.label_value not in arms:
            return (f"no {own} series has {sel.label}=\"{sel.label_value}\" (the {sel.arm}); its {sel.label} values: "
                    f"{listing(arms)}")
        wanted = _LE.search(matchers)
        if wanted:
            arm_sel = f'{metric}{{service="{svc}",{sel.label}="{escape_label_value(sel.label_value)}"}}'
            buckets = _values(source, "le", arm_sel, at) or []
            if wanted.group(1) not in buckets:
                return bucket_advice(metric, wanted.group(1), buckets)
    return (f"the series exist, but the query returns nothing now (no samples yet? a label matcher it adds, such "
            f"as code=~\"5..\", that no series has?): {promql}")


def bucket_advice(metric: str, wanted: str, buckets: list[str], *, overridable: bool = True,
                  bucket: str = "le=\"{}\"") -> str:
    """`overridable` False: a store whose `slow` is built in (InfluxDB, Datadog), so the only fix is the bucket.
    `bucket`: how the store names one ("le=\"{}\"", Datadog's "upper_bound:{}")."""
    finite = sorted((b for b in buckets if b not in ("+Inf", "Inf")), key=_number)
    closest = min(finite, key=lambda b: abs(_number(b) - _number(wanted)), default=None)
    override = (f'override `slow` under `queries:` in the rule file with a bucket it has, e.g. le="{closest}"'
                if closest else "override `slow` under `queries:` with a bucket it has")
    fix = (f"Add a {wanted} s bucket to the exporter's histogram, or {override}" if overridable else
           f"Add a {wanted} s bucket to the exporter's histogram (this store's `slow` is built in: it reads that "
           "bucket only)")
    shown = listing(finite + ['+Inf']) if bucket.startswith("le=") else listing(finite)
    return (f"the histogram {metric} has no {bucket.format(wanted)} bucket (its buckets: {shown}): "
            f"the `slow` signal counts the answers slower than {wanted} s (the latency objective). {fix}")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _selectors(promql: str) -> Iterable[tuple[str, str]]:
    """The metric selectors of a query, `name{matchers}`, each name once, in order."""
    seen: set[str] = set()
    for m in _SELECTOR.finditer(promql):
        if m.group(1) not in seen:
            seen.add(m.group(1))
            yield m.group(1), m.group(2)


def _ask(source: Introspectable, promql: str, at: float) -> list[dict[str, Any]]:
    return source.instant_result(promql, at)


def _values(source: Introspectable, label: str, selector: str, at: float) -> list[str] | None:
    """The values `label` takes on `selector`'s series (None: none of them has the label)."""
    rows = _ask(source, f"count by ({label}) ({selector})", at)
    found = sorted({r.get("metric", {}).get(label) for r in rows} - {None})
    return found or None


def listing(values: list[str]) -> str:
    """Values for people, quoted: the first few, and how many there are in all when there are more ("none": none)."""
    shown = ", ".join(f'"{v}"' for v in values[:_SHOWN])
    return shown + (f" … ({len(values)} in all)" if len(values) > _SHOWN else "") if values else "none"


def duration(seconds: float) -> str:
    """A length of time for people: in hours from 2 h on, in minutes from 2 min on, else in seconds."""
    return f"{seconds / 3600:.1f} h" if seconds >= 7200 else f"{seconds / 60:.0f} min" if seconds >= 120 else \
        f"{seconds:.0f} s"


__all__ = ["Examiner", "Finding", "Introspectable", "Need", "PromQLExaminer", "Unreachable", "bucket_advice",
           "diagnose", "duration", "examine", "listing", "needs"]
