"""Rule files as pydantic models (docs/rules.md; SPEC.md §5, the contract outside this repository). Parsing with
line numbers lives in loader.py.

A rule file names the service it guards, optionally overrides or adds signal queries, and lists
checks. Example (the seed's policy)::

    service: checkout
    checks:
      - name: error-rate
        kind: threshold
        ratio: errors / requests
        above: 5%
        for: 2m
        action: rollback
      - name: p99-latency
        kind: threshold
        signal: p99_seconds
        above: 1s
        for: 3m
        action: rollback
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from guardian.domain import Action, SignalType
from guardian.rules.promql import PLACEHOLDERS, unknown_placeholders, unquoted_value_placeholders

_NUM = r"(\d+(?:\.\d+)?)"
# a space between a number and its unit is allowed everywhere ("250 ms" as "2 %"), as is one between parts
_DURATION = re.compile(rf"^\s*(?:{_NUM}\s*h)?\s*(?:{_NUM}\s*m(?!s))?\s*(?:{_NUM}\s*s)?\s*(?:(\d+)\s*ms)?\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _finite(value: int | float) -> float:
    """As a float; ValueError (which pydantic reports with the field) for NaN, infinities and integers
    beyond any float (float() raises OverflowError for those, which pydantic would not catch)."""
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"a number of {len(str(abs(int(value))))} digits is too large") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def parse_duration(value: object) -> float:
    """'2m' -> 120.0, '1h30m' -> 5400.0, '500ms' -> 0.5, 30 -> 30.0 (plain numbers are seconds)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 2m, 1h30m")
    if isinstance(value, int | float):
        seconds = _finite(value)
    elif isinstance(value, str) and value.strip() and (m := _DURATION.match(value)) and any(m.groups()):
        h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
        seconds = _finite(h * 3600 + mi * 60 + s + ms / 1000)
    else:
        raise ValueError(f"bad duration {value!r}: use a number of seconds or e.g. 30s, 2m, 1h30m, 500ms")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    return seconds


def parse_number(value: object) -> float:
    """A limit: 0.05, '5%' (= 0.05), '1s' / '250ms' (= seconds); a space may stand before the unit ('250 ms')."""
    if isinstance(value, bool):
        raise ValueError("expected a number such as 0.05, 5% or 1s")
    if isinstance(value, int | float):
        return _finite(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                return _finite(float(text[:-1]) / 100)
            if text and text[-1] in "smh" and text[0].isdigit():
                return parse_duration(text)
            return _finite(float(text))
        except ValueError:
            pass
    raise ValueError(f"expected a number such as 0.05, 5% or 1s, got {value!r}")


def parse_fraction(value: object, example: str = "0.95 or 95%") -> float:
    """A probability: 0.95 or '95%' (= 0.95). A number above 1 is refused with how to write it (95 -> 0.95)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a fraction such as {example}, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            return _finite(float(text[:-1]) / 100) if text.endswith("%") else _finite(float(text))
        except ValueError:
            raise ValueError(f"expected a fraction such as {example}, got {value!r}") from None
    number = _finite(value)
    if number > 1:
        raise ValueError(f"{value!r} is above 1: write a fraction or a percentage, e.g. {example}")
    return number


def parse_ratio(value: object) -> float:
    """A ratio of rates: 2, '2x', 'x2' or '×2' (twice the baseline's), above 0."""
    text = value.strip().lower() if isinstance(value, str) else value
    if isinstance(text, str) and text and (text[0] in "x×" or text[-1] in "x×"):
        text = text.strip("x×").strip()
    try:
        number = parse_number(text)
    except ValueError:
        raise ValueError(f"expected a ratio such as 2, 2x or ×2 (twice the baseline's rate), got {value!r}") from None
    if number <= 0:
        raise ValueError(f"a ratio of rates is above 0, got {value!r}")
    return number


def _ratio_limit(field: str, limit: float, raw: object) -> None:
    """A ratio of counters is a share in [0, 1]: a limit outside it, or one it can never cross, is a mistake
    (`above: 200%` could never fail)."""
    if limit < 0 or limit > 1:
        raise ValueError(f"a ratio is a share between 0 and 100%: {field}: {raw} is outside it")
    if field == "above" and limit >= 1:
        raise ValueError(f"a ratio is a share between 0 and 100%: it is never above {raw}, so this check could "
                         "never fail")
    if field == "below" and limit <= 0:
        raise ValueError(f"a ratio is a share between 0 and 100%: it is never below {raw}, so this check could "
                         "never fail")


SIGN_MIN_DETECTABLE = 0.25  # a sign test's default `min_detectable`: +25% (P99)

_SCALE_NEEDS_REPLICAS = "action 'scale' needs 'replicas: N', the number of replicas to add (e.g. replicas: 1)"


def _check_scale(check: BaseModel) -> None:
    if getattr(check, "action", None) != "scale":
        return
    if "replicas" not in check.model_fields_set:
        raise ValueError(_SCALE_NEEDS_REPLICAS)
    if getattr(check, "replicas", 0) == 0:
        raise ValueError("action 'scale' needs a non-zero 'replicas' delta")


Duration = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Query(_Strict):
    """A signal's PromQL template. COUNTER: the cumulative counter (the guardian takes the
    increase per tick); GAUGE: a value per tick (use {{window}} in rate() windows)."""

    promql: str = Field(min_length=1)
    type: SignalType = SignalType.GAUGE

    @field_validator("promql")
    @classmethod
    def _known_placeholders(cls, v: str) -> str:
        if bad := unknown_placeholders(v):
            raise ValueError(
                f"unknown placeholder {{{{{bad[0]}}}}}; known: " + ", ".join(f"{{{{{p}}}}}" for p in PLACEHOLDERS)
            )
        if bad := unquoted_value_placeholders(v):  # its escaping holds only inside "..." (injection)
            raise ValueError(f"{{{{{bad[0]}}}}} must be inside a double-quoted string, e.g. "
                             f'service="{{{{service}}}}"')
        return v


class ThresholdCheck(_Strict):
    """An absolute guard on one arm: a signal or a ratio of two counters against a limit.

    Ratios use the Wilson bound at `confidence`: a breach needs the bound beyond the limit, so a
    handful of requests cannot fail a release; fewer than `min_samples` requests (in `window`)
    is inconclusive. The breach must last `for` before the check fails.
    """

    name: str = Field(min_length=1)
    kind: Literal["threshold"] = "threshold"
    signal: str | None = None
    ratio: str | None = None  # "errors / requests"
    arm: Literal["canary", "baseline"] = "canary"
    above: float | None = None
    below: float | None = None
    for_: Duration = Field(0.0, alias="for")
    window: Duration | None = None  # history aggregated per evaluation; default: 30s for ratios, one tick else
    min_samples: float = Field(50.0, ge=0)
    samples_from: str = "requests"  # the counter that counts samples for `min_samples` on signals
    confidence: float = Field(0.95, gt=0.5, lt=1)
    action: Literal["rollback", "pause", "scale", "notify"] = "rollback"
    replicas: int = 1  # with action: scale

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("above", "below", mode="before")
    @classmethod
    def _number(cls, v: object, info: ValidationInfo) -> float | None:
        if v is None:
            return None
        limit = parse_number(v)
        if info.data.get("ratio") is not None and info.data.get("signal") is None:  # declared (validated) before
            _ratio_limit(str(info.field_name), limit, v)
        return limit

    @field_validator("for_", "window", mode="before")
    @classmethod
    def _duration(cls, v: object, info: ValidationInfo) -> float | None:
        if v is None:
            return None
        seconds = parse_duration(v)
        if info.field_name == "window" and seconds <= 0:
            raise ValueError(f"window must be longer than 0s (it is the history each evaluation sums, e.g. 30s); "
                             f"got {v!r}")
        return seconds

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, v: object) -> float:
        return parse_fraction(v)

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = [p.strip() for p in v.split("/")]
        if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
            raise ValueError(f"ratio must read 'numerator / denominator' with two signal names, got {v!r}")
        return f"{parts[0]} / {parts[1]}"

    @model_validator(mode="after")
    def _one_of(self) -> ThresholdCheck:
        if (self.signal is None) == (self.ratio is None):
            raise ValueError("give exactly one of 'signal' or 'ratio'")
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        _check_scale(self)
        return self

    @property
    def limit(self) -> float:
        return self.above if self.above is not None else self.below  # type: ignore[return-value]

    @property
    def direction(self) -> str:
        return "above" if self.above is not None else "below"

    @property
    def signals(self) -> tuple[str, ...]:
        if self.ratio:
            num, den = self.ratio.split(" / ")
            return (num, den)
        return (self.signal,)  # type: ignore[return-value]

    @property
    def action_enum(self) -> Action:
        return Action(self.action)


class CompareCheck(_Strict):
    """Canary against baseline, judged sequentially every tick (judge/compare.py).

    test: rate     — a ratio of counters (errors / requests): is the canary's rate worse than
                     `tolerance` × the baseline's? Anytime-valid at `alpha`.
          sign     — a gauge (p99_seconds): is the canary above (1 + tolerance) × baseline
                     more often than chance? Anytime-valid at `alpha`.
          collapse — a counter (requests): has the canary stopped getting the traffic it used to
                     get while the baseline still gets it (a crash loop)? p-value at `alpha`.
          trend    — a gauge (memory_bytes): has canary/baseline grown by more than `tolerance`
                     (a fraction) with a significant upward trend (a leak)?
    """

    name: str = Field(min_length=1)
    kind: Literal["compare"] = "compare"
    signal: str | None = None
    ratio: str | None = None
    test: Literal["rate", "sign", "collapse", "trend"] | None = None
    tolerance: float | None = None  # rate: ratio λ0 (1.0); sign: margin (0.2); trend: growth (0.1)
    # the smallest regression a passing check must have had the power to see before a promotion (judge/power.py):
    # rate: a ratio to the baseline's rate (×2 the tolerance); sign: a rise over the baseline (+25%)
    min_detectable: float | None = None
    alpha: float = Field(0.01, gt=0, lt=0.5)
    min_samples: float = Field(50.0, ge=0)  # canary requests needed before a rate test can pass
    # Both default to a number of ticks, so a fast-ticking guardian is not made slow by them:
    warmup: Duration | None = None  # not counted after the rollout starts (default: 3 ticks)
    every: Duration | None = None  # a new sequential test starts this often (default: 6 ticks)
    burst_cap: float = Field(3.0, gt=1)  # the most one tick can multiply the evidence by
    optional: bool = False  # abstain (rather than hold the rollout) when neither arm reports the signal
    action: Literal["rollback", "pause", "scale", "notify"] = "rollback"
    replicas: int = 1

    @field_validator("tolerance", mode="before")
    @classmethod
    def _number(cls, v: object) -> float | None:
        return None if v is None else parse_number(v)

    @field_validator("warmup", "every", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("min_detectable", mode="before")
    @classmethod
    def _min_detectable(cls, v: object, info: ValidationInfo) -> float | None:
        if v is None:
            return None
        test = info.data.get("test") or ("rate" if info.data.get("ratio") else "sign")
        tolerance = info.data.get("tolerance")
        if test == "rate":
            value = parse_ratio(v)
            limit = 1.0 if tolerance is None else tolerance
            if value <= limit:
                raise ValueError(f"{v!r} is not above the check's tolerance ×{limit:g}: the rate test never fails "
                                 "for a ratio within its tolerance, so it could never have the power to see it "
                                 "(e.g. min_detectable: 2 for ×2 the baseline's rate)")
            return value
        if test == "sign":
            value = parse_number(v)
            limit = 0.2 if tolerance is None else tolerance
            if value < limit:
                raise ValueError(f"{v!r} is below the check's margin (tolerance) {limit:.0%}: the sign test never "
                                 "fails for a rise within its margin, so it could never have the power to see it "
                                 "(e.g. min_detectable: 25%)")
            return value
        raise ValueError(f"min_detectable applies to the rate and sign tests, not to test {test!r}")

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha(cls, v: object) -> float:
        return parse_fraction(v, "0.01 or 1%")

    _ratio = field_validator("ratio")(ThresholdCheck._ratio.__func__)

    @model_validator(mode="after")
    def _consistent(self) -> CompareCheck:
        if (self.signal is None) == (self.ratio is None):
            raise ValueError("give exactly one of 'signal' or 'ratio'")
        test = self.kind_of_test
        if test == "rate" and self.ratio is None:
            raise ValueError("test 'rate' compares a ratio of counters: give 'ratio: errors / requests'")
        if test != "rate" and self.ratio is not None:
            raise ValueError(f"test {test!r} reads one signal: give 'signal', not 'ratio'")
        _check_scale(self)
        return self

    @property
    def kind_of_test(self) -> str:
        return self.test or ("rate" if self.ratio else "sign")

    @property
    def effective_tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return {"rate": 1.0, "sign": 0.2, "trend": 0.1, "collapse": 0.0}[self.kind_of_test]

    @property
    def effective_min_detectable(self) -> float:
        """`min_detectable`, else ×2 the tolerance for a rate test (×2 the baseline's rate at the default
        tolerance) and +25% (at least 1.25 × the margin) for a sign test."""
        if self.min_detectable is not None:
            return self.min_detectable
        if self.kind_of_test == "rate":
            return 2 * self.effective_tolerance
        return max(SIGN_MIN_DETECTABLE, 1.25 * self.effective_tolerance)

    @property
    def signals(self) -> tuple[str, ...]:
        if self.ratio:
            num, den = self.ratio.split(" / ")
            return (num, den)
        return (self.signal,)  # type: ignore[return-value]

    @property
    def action_enum(self) -> Action:
        return Action(self.action)


# A forecast check with one of these actions is advisory: it never holds a rollout, and abstains (rather than
# refusing the rollout's start) when it has no model.
ADVISORY_ACTIONS = frozenset({"scale", "notify"})
# a scaling forecast check's default `min_change`: a period must be 25% off its forecast as well as `sigma` σ
SCALE_MIN_CHANGE = 0.25


class ForecastCheck(_Strict):
    """One signal against its seasonal 3σ forecast (judge/forecast.py), for services without a
    concurrent baseline arm and as an early warning. The model is `models/<service>/<signal>.json`
    (written by `guardian baseline fit`), frozen when the rollout starts.

    The signal is averaged over `period` (default: the model's bucket) — counters as per-second
    rates, `arm: total` summed over the arms. The check FAILS once `consecutive` periods in a row
    are beyond `sigma` σ on the watched side, or (with `cusum`) once a one-sided CUSUM of the
    standardized residuals crosses `cusum_h` (small sustained shifts). Example — "3 anomalous
    periods in a row → scale out by one"::

        - name: traffic-forecast
          kind: baseline
          signal: requests
          direction: above
          consecutive: 3
          action: scale
          replicas: 1
    """

    name: str = Field(min_length=1)
    kind: Literal["baseline"] = "baseline"
    signal: str = Field(min_length=1)
    arm: Literal["canary", "baseline", "total"] = "total"
    model: str | None = None  # path of the model file; default <models dir>/<service>/<signal>.json
    sigma: float = Field(3.0, gt=0)
    consecutive: int = Field(3, ge=1)
    direction: Literal["above", "below", "both"] = "both"
    period: Duration | None = None
    cusum: bool = True
    cusum_k: float = Field(0.5, ge=0)
    cusum_h: float = Field(5.0, gt=0)
    # a period counts only if it is also this far from the forecast, as a share of it ("25%"); default
    # SCALE_MIN_CHANGE for `action: scale` (a capacity action: traffic a few percent off its forecast is
    # within the headroom, and within real traffic's day-to-day wander), 0 otherwise
    min_change: float | None = Field(None, ge=0)
    optional: bool = False  # abstain (rather than refuse the rollout's start) when there is no model
    action: Literal["rollback", "pause", "scale", "notify"] = "rollback"
    replicas: int = 1

    @field_validator("period", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("min_change", mode="before")
    @classmethod
    def _share(cls, v: object) -> float | None:
        return None if v is None else parse_number(v)

    @property
    def change_floor(self) -> float:
        """`min_change` as it applies: the field, or SCALE_MIN_CHANGE for a scaling check, or 0."""
        if self.min_change is not None:
            return self.min_change
        return SCALE_MIN_CHANGE if self.action == "scale" else 0.0

    @model_validator(mode="after")
    def _consistent(self) -> ForecastCheck:
        if self.period is not None and self.period <= 0:
            raise ValueError("period must be longer than 0s")
        _check_scale(self)
        return self

    @property
    def signals(self) -> tuple[str, ...]:
        return (self.signal,)

    @property
    def action_enum(self) -> Action:
        return Action(self.action)


Check = Annotated[ThresholdCheck | CompareCheck | ForecastCheck, Field(discriminator="kind")]


class AlertRoute(_Strict):
    """Alertmanager alerts whose labels all match `match` ask for `action`."""

    match: dict[str, str] = Field(min_length=1)
    action: Literal["rollback", "pause", "notify"] = "rollback"


ARM_PLACEHOLDERS = ("version", "previous_version", "pod_template_hash", "previous_pod_template_hash")
# {pod_template_hash} / {previous_pod_template_hash}: the new / previous ReplicaSet of a Deployment, filled by an
# actuator that knows them (`arm_values`: the kubernetes actuator); unknown -> the arm is unresolved
_ARM_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class Arms(_Strict):
    """The label that tells the arms apart and each arm's value of it.

    A value may follow the release: `{version}` is the tag of the rollout's image, `{previous_version}`
    the tag of the image it replaces (`arms: {label: version, canary: "{version}", baseline:
    "{previous_version}"}` for a Swarm update whose tasks carry `guardian.version`). They are filled in
    per rollout by the guard; one that has no value there (no previous image known) leaves that arm
    unresolved, and the checks reading it inconclusive."""

    label: str = "track"
    canary: str = "canary"
    baseline: str = "baseline"

    @field_validator("label")
    @classmethod
    def _label_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a valid Prometheus label name")
        return v

    @field_validator("canary", "baseline")
    @classmethod
    def _known_placeholders(cls, v: str) -> str:
        if bad := [name for name in _ARM_PLACEHOLDER.findall(v) if name not in ARM_PLACEHOLDERS]:
            raise ValueError(f"unknown placeholder {{{bad[0]}}}; known: "
                             + ", ".join(f"{{{p}}}" for p in ARM_PLACEHOLDERS))
        return v

    @property
    def templated(self) -> bool:
        """True if an arm's value has a placeholder (it must be resolved per rollout)."""
        return bool(_ARM_PLACEHOLDER.search(self.canary) or _ARM_PLACEHOLDER.search(self.baseline))

    def placeholders(self, arm: str) -> list[str]:
        """The placeholders in `arm`'s value, e.g. ['previous_version']."""
        return _ARM_PLACEHOLDER.findall(getattr(self, arm))

    def resolve(self, arm: str, values: Mapping[str, str | None]) -> str | None:
        """`arm`'s label value with its placeholders filled from `values`; None when one of them has no
        value (None or absent)."""
        if any(values.get(name) is None for name in self.placeholders(arm)):
            return None
        return _ARM_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), getattr(self, arm))


class Watch(_Strict):
    """The steady-state guard (`watch:`): the service judged between rollouts (engine/watches.py,
    judge/steady.py). Its threshold and baseline (forecast) checks run every tick with no rollout in
    flight; a failing `scale` check scales it out by the check's `replicas` (within `min_replicas` ..
    `max_replicas`, at most once per `cooldown`) and back in once every scaling check has passed for
    `scale_in_after`; a breach within `attribution` of a promotion names that release, and a failing
    `rollback` check rolls it back to the version it replaced when that can still be had. Example::

        watch:
          min_replicas: 2
          max_replicas: 6
          scale_in_after: 5m
          cooldown: 2m
          attribution: 30m
    """

    enabled: bool = True
    target: str | None = None  # the actuator that scales / rolls back (default: the settings' default_target)
    checks: list[str] | None = None  # the checks it runs (default: every threshold and baseline check)
    replicas: int | None = Field(None, ge=1)  # the replicas when it starts, for an actuator that does not report them
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(10, ge=1)
    scale_in_after: Duration = 300.0  # every scaling check passing this long before scaling back in
    scale_in_within: float | None = Field(None, gt=0)  # and its forecast within this many σ (stricter than `sigma`)
    cooldown: Duration = 300.0  # at least this long between two scalings (and between two refusals said)
    attribution: Duration = 1800.0  # a breach this soon after a promotion names that release as the suspect

    @field_validator("scale_in_after", "cooldown", "attribution", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return parse_duration(v)

    @model_validator(mode="after")
    def _bounds(self) -> Watch:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        if self.replicas is not None and not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) must lie within min_replicas ({self.min_replicas}) and "
                             f"max_replicas ({self.max_replicas})")
        return self


MAX_ANALYSIS_FACTOR = 3.0  # `max_analysis` by default: 3 × the analysis of a step
APPROVAL_TIMEOUT_DEFAULT = 3600.0  # a rollout waits this long for a human "go" before it pauses (rule file)
UNDERPOWERED_DEFAULT = "promote"  # what an underpowered rollout does after `max_analysis` (docs/rules.md, "Power")


class RuleFile(_Strict):
    service: str = Field(min_length=1)
    arms: Arms = Arms()
    queries: dict[str, Query] = {}
    checks: list[Check] = Field(default_factory=list)
    alerts: list[AlertRoute] = []
    # after the last step: this long at 100% with the previous version warm, still judged (docs/rules.md, "Bake");
    # 0 (the default): promoted at the end of the last step, as before bakes existed
    bake: Duration = 0.0
    # the pre-rollout window a bake compares the new version with, beside the previous version's own ticks
    bake_before: Duration = 600.0
    # between rollouts: the steady-state guard (docs/rules.md, "Watch"); absent: not watched (unless the settings'
    # watch_services name the service)
    watch: Watch | None = None
    # power-aware promotion (docs/rules.md, "Power"): a rollout whose gating checks pass without the power to see
    # their `min_detectable` has its last comparative step's analysis extended up to `max_analysis` (default: 3 ×
    # the analysis of a step with `pause`, none with `promote`), then it pauses (`underpowered: pause`) or goes
    # on all the same, saying so (`promote`, the default: with `pause` 130 of the bench's 147 good releases would
    # pause, docs/rules.md)
    max_analysis: Duration | None = None
    underpowered: Literal["pause", "promote"] = UNDERPOWERED_DEFAULT
    # approval steps (docs/rules.md, "Approval"): `promote` holds the last step's end for a human "go" (besides any
    # `approve` in a start request's steps); a rollout that waits `approval_timeout` without one pauses (0: never)
    # the metric store this service's signals are read from (docs/sources.md); absent: the settings' `source`
    source: Literal["prometheus", "victoriametrics", "influxdb", "datadog", "cloudwatch"] | None = None
    approve_before: Literal["promote"] | None = None
    approval_timeout: Duration = APPROVAL_TIMEOUT_DEFAULT

    @field_validator("bake", "bake_before", "approval_timeout", mode="before")
    @classmethod
    def _bake_duration(cls, v: object) -> float:
        return parse_duration(v)

    @field_validator("max_analysis", mode="before")
    @classmethod
    def _max_analysis(cls, v: object) -> float | None:
        if v is None:
            return None
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError(f"max_analysis must be longer than 0s (how long the last step's analysis may extend "
                             f"for lack of power, e.g. 10m); got {v!r}")
        return seconds

    def max_analysis_for(self, analysis_seconds: float) -> float:
        """How long the last comparative step may be analysed for lack of power: `max_analysis`, else
        MAX_ANALYSIS_FACTOR × the analysis of a step with `underpowered: pause` and no extension with `promote`
        (it would only delay the same promotion); never less than that analysis."""
        if self.max_analysis is not None:
            return max(self.max_analysis, analysis_seconds)
        return MAX_ANALYSIS_FACTOR * analysis_seconds if self.underpowered == "pause" else analysis_seconds

    @field_validator("queries")
    @classmethod
    def _signal_names(cls, v: dict[str, Query]) -> dict[str, Query]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"signal name {name!r} must be letters, digits and _")
        return v
