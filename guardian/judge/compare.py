"""Canary-versus-baseline checks (kind: compare): pure, arrays in, a Verdict out.

Every verdict says what it found in numbers: the e-value against the 1/α it must reach, the
observed ratio of the arms, and the samples behind it; while evidence is short it says how much
more is needed. A canary that gets no traffic is inconclusive (so the rollout pauses), never a pass.
"""
from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np

from guardian.domain import Evidence, Growing, Result, Verdict
from guardian.judge.bake import bake_rate, bake_sign, bake_start
from guardian.judge.power import rate_power, sign_power
from guardian.judge.sequential import (
    LEVEL_ALPHA_SHARE,
    NO_REFERENCE,
    DispersionTracker,
    LevelTracker,
    collapse_p_value,
    cumulative,
    flapping_p_value,
    level_log_cap,
    rate_log_lr,
    sign_log_lr,
    staggered_from_cumulative,
)
from guardian.rules.models import CompareCheck

TREND_TICKS = 12  # the window a leak's trend is judged on
TREND_P = 0.01
# one tick without traffic is a collapse once it is beyond chance and took away enough of the canary's requests
# (a missing scrape is missing, not empty: it neither counts nor breaks a run)
COLLAPSE_MIN_TICKS = 1
COLLAPSE_MIN_MISSED = 20  # and it took away at least this many canary requests (a quiet canary's empty ticks are not)
COLLAPSE_WINDOW, FLAP_MIN_ZERO = 6, 2  # or two of the last six ticks empty (a crash loop between crashes)


WARMUP_TICKS, EVERY_TICKS = 3, 6  # the defaults when a check gives no `warmup` / `every`


def _ticks(seconds: float, step: float) -> int:
    return max(0, math.ceil(seconds / step))


def _warmup(check: CompareCheck, step: float) -> int:
    """The check's `warmup`, else 0 for the rate of errors (a new version's errors are errors: a blatant
    failure is judged from the first tick) and WARMUP_TICKS for the rest: slow requests, latency, CPU and
    memory of a version just started warm up, a canary's traffic ramps up (collapse), and signals we do not
    know may do either."""
    if check.warmup is not None:
        return _ticks(check.warmup, step)
    return 0 if check.kind_of_test == "rate" and check.signals == ("errors", "requests") else WARMUP_TICKS


def _every(check: CompareCheck, step: float) -> int:
    return EVERY_TICKS if check.every is None else max(1, _ticks(check.every, step))


def _cumulative_llr(ev: Evidence, key: tuple, t: int, rows) -> np.ndarray:
    """The cumulative log-LR matrix up to tick t (row i = sum of ticks < i), memoised on the evidence
    and extended with `rows(lo, hi)` for new ticks only: a tick's log-LR depends on that tick alone."""
    cum = ev.cache.get(key)
    have = -1 if cum is None else len(cum) - 1
    if have < t + 1:
        lr = rows(max(have, 0), t + 1)
        if cum is None:
            cum = ev.cache[key] = Growing(lr.shape[1])
            cum.extend(cumulative(lr))
        elif len(lr) == 1:
            cum.extend(cum.view[-1:] + np.where(np.isnan(lr), 0.0, lr))
        else:
            cum.extend(cum.view[-1] + cumulative(lr)[1:])
    return cum.view


def _dispersion(ev: Evidence, num: str, den: str, k_b: np.ndarray, n_b: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The share test's φ for ticks [lo, hi) (`share_test_dispersion`, each tick's from the ticks before it), from
    running sums memoised on the evidence: a look adds its new ticks only."""
    key = ("dispersion", num, den)
    tracker = ev.cache.get(key)
    if tracker is None or tracker.seen > lo:
        tracker = ev.cache[key] = DispersionTracker()
    while tracker.seen < lo:
        tracker.step(float(k_b[tracker.seen]), float(n_b[tracker.seen]))
    return np.array([tracker.step(float(k_b[t]), float(n_b[t])) for t in range(lo, hi)])


def _csums(ev: Evidence, columns: tuple[tuple[str, str], ...], t: int) -> np.ndarray:
    """Running sums of (signal, arm) columns side by side (missing = 0), memoised; the sum over
    ticks [lo, hi) of column j is cs[hi, j] - cs[lo, j]."""
    key = ("csums", columns)
    cs = ev.cache.get(key)
    if cs is None:
        cs = ev.cache[key] = Growing(len(columns))
        cs.extend(np.zeros((1, len(columns))))
    have = len(cs) - 1
    if have < t + 1:
        fresh = np.column_stack([ev.array(signal, arm)[have : t + 1] for signal, arm in columns])
        with np.errstate(over="ignore", invalid="ignore"):  # absurd counts become inf, judged below
            cs.extend(cs.view[-1] + np.cumsum(np.where(np.isnan(fresh), 0.0, fresh), axis=0))
    return cs.view


def _reported(ev: Evidence, signal: str, arm: str, t: int) -> bool:
    """Has the arm reported the signal at any tick <= t? (memoised: the first tick it did)"""
    key = ("first_reported", signal, arm)
    first = ev.cache.get(key)
    if first is None:
        present = np.flatnonzero(~np.isnan(ev.array(signal, arm)))
        if present.size:
            first = ev.cache[key] = int(present[0])
    return first is not None and first <= t


def with_power(check: object, verdict: Verdict, ev: Evidence, t: int) -> Verdict:
    """`verdict` with what its evidence could have revealed (judge/power.py): a passing rate or sign test's, from
    its first test (the one begun after the warm-up); any other verdict as it is. The guard asks only where the
    power decides or is said (policy.power_due): it is not free."""
    if not isinstance(check, CompareCheck) or verdict.result is not Result.PASS or verdict.detectable is not None:
        return verdict
    test = check.kind_of_test
    if test not in ("rate", "sign"):
        return verdict
    warmup = _warmup(check, ev.step_seconds)
    if test == "sign":
        return dataclasses.replace(verdict, **sign_power(check, ev, t, warmup))
    return dataclasses.replace(verdict, **rate_power(check, ev, t, warmup, share_alpha(check)))


def evaluate(check: CompareCheck, ev: Evidence, t: int) -> Verdict:
    base = {"check": check.name, "action": check.action_enum, "replicas": check.replicas}
    if ev.unavailable[t]:
        return Verdict(result=Result.ERROR, reason=f"metrics unavailable: {ev.unavailable[t]}", **base)
    arms = ("canary", "baseline")
    if check.optional and not any(_reported(ev, sig, arm, t) for sig in check.signals for arm in arms):
        return Verdict(result=Result.INCONCLUSIVE, abstained=True, **base,
                       reason=f"abstains: neither arm reports {' or '.join(check.signals)} (an optional check)")
    test = check.kind_of_test
    judge = {"rate": _rate, "sign": _sign, "collapse": _collapse, "trend": _trend}[test]
    verdict = judge(check, ev, t, base)
    if ev.bake is None:
        return verdict
    if test == "rate":  # in the bake, also against the service before the rollout (judge/bake.py)
        return bake_rate(verdict, ev, t, *check.signals, tolerance=check.effective_tolerance, alpha=check.alpha)
    if test == "sign":
        return bake_sign(verdict, ev, t, check.signal or "", margin=check.effective_tolerance, alpha=check.alpha)
    return verdict


def level_reference(ev: Evidence, num: str, den: str) -> tuple[float, float, float] | None:
    """(events, requests, the window's length in ticks) of the service in the window before the rollout
    (`Evidence.before`), or None when there is none to judge the level test against (no window, no requests)."""
    before = ev.before or {}
    values, window = before.get("before") or {}, before.get("window") or (0.0, 0.0)
    k, n = values.get(num), values.get(den)
    try:
        span = float(window[1]) - float(window[0])
    except (TypeError, ValueError, IndexError):
        return None
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in (k, n)):
        return None
    if span <= 0 or n <= 0 or k < 0:
        return None
    return float(k), float(n), span / ev.step_seconds


def share_alpha(check: CompareCheck) -> float:
    """The part of a rate check's α its share test spends: what the level test (LEVEL_ALPHA_SHARE) leaves."""
    return check.alpha * (1 - LEVEL_ALPHA_SHARE)


def _rate(check: CompareCheck, ev: Evidence, t: int, base: dict) -> Verdict:
    num, den = check.signals
    k_c, n_c = ev.array(num, "canary")[: t + 1], ev.array(den, "canary")[: t + 1]
    k_b, n_b = ev.array(num, "baseline")[: t + 1], ev.array(den, "baseline")[: t + 1]
    lam0 = check.effective_tolerance
    warmup, every = _warmup(check, ev.step_seconds), _every(check, ev.step_seconds)
    cap = check.burst_cap
    reference = level_reference(ev, num, den)
    alpha = share_alpha(check)

    def rows(lo: int, hi: int) -> np.ndarray:
        return rate_log_lr(k_c[lo:hi], n_c[lo:hi], k_b[lo:hi], n_b[lo:hi], tolerance=lam0, burst_cap=cap,
                           dispersion=_dispersion(ev, num, den, k_b, n_b, lo, hi))

    cum = _cumulative_llr(ev, ("rate", num, den, lam0, cap), t, rows)
    result = staggered_from_cumulative(cum, t, alpha, warmup=warmup, every=every)
    test = "e_value"
    # the fast path: each tick's canary count against the service's own rate (its window before the rollout, when
    # the guard has one, and the baseline's ticks so far)
    level_alpha = check.alpha * LEVEL_ALPHA_SHARE
    log_cap = level_log_cap(level_alpha)

    def level_rows(lo: int, hi: int) -> np.ndarray:
        key = ("level_tracker", num, den, lam0, reference)
        tracker = ev.cache.get(key)
        if tracker is None or tracker.seen > lo:
            tracker = ev.cache[key] = LevelTracker(reference or NO_REFERENCE, lam0, log_cap)
        rows = [tracker.step(*(float(x[i]) for x in (k_c, n_c, k_b, n_b))) for i in range(tracker.seen, hi)]
        return np.array(rows[len(rows) - (hi - lo):]).reshape(hi - lo, -1)

    level_cum = _cumulative_llr(ev, ("level", num, den, lam0, reference), t, level_rows)
    level = staggered_from_cumulative(level_cum, t, level_alpha, warmup=warmup, every=every)
    if level.rejected or (not result.rejected and level.e_value / level.threshold > result.e_value
                          / result.threshold):
        result, test = level, "level e_value"
    since = min(result.start if result.start is not None else warmup, t + 1)
    cs = _csums(ev, ((num, "canary"), (den, "canary"), (num, "baseline"), (den, "baseline")), t)
    with np.errstate(invalid="ignore", over="ignore"):
        ec, rc, eb, rb = (float(x) for x in cs[t + 1] - cs[since])
        lo = min(warmup, t + 1)  # the canary's samples: its ticks that report both counts
        paired = ~(np.isnan(k_c[lo:]) | np.isnan(n_c[lo:]))
        total_canary = float(np.sum(n_c[lo:][paired]))
    rate_c = ec / rc if rc > 0 else None
    rate_b = max(eb, 0.5) / rb if rb > 0 else None  # half an event at least: finite when the baseline had none
    ratio = (rate_c / rate_b) if rate_c is not None and rate_b else None
    stat = f"{test}={result.e_value:.3g} (reject at {result.threshold:.3g} = 1/alpha_j, alpha={check.alpha:g})"
    if test == "level e_value":
        stat += (f" against the service's rate before the rollout ({reference[0]:g}/{reference[1]:g} {num} per {den})"
                 " and the baseline's" if reference else " against the baseline's rate")
    facts = (f"canary {ec:g}/{rc:g} {num} per {den} vs baseline {eb:g}/{rb:g} since tick {since}"
             + (f", ratio {ratio:.2f}" if ratio is not None else ""))
    common = {**base, "value": ratio, "threshold": lam0, "sample_size": rc,
              "statistic": stat}
    if result.rejected:
        return Verdict(result=Result.FAIL, reason=f"{num} rate worse than {lam0:g}x baseline: {facts}; {stat}",
                       **common)
    # the first WARMUP_TICKS hold rather than pause while data is short, warm-up or not: a canary's first scrape
    # may land after the first tick; the test above rejects on strong evidence from tick 0 all the same
    settling = t < max(warmup, WARMUP_TICKS)
    if (missing := _numerator_missing(ev, num, den, t)) is not None:  # "0 of N" would be a pass on no data
        return Verdict(result=Result.INCONCLUSIVE, warming_up=settling, reason=missing, **common)
    if t < warmup:
        return Verdict(result=Result.INCONCLUSIVE, warming_up=True, reason=f"warming up ({facts})", **common)
    if not math.isfinite(total_canary):  # counts beyond any float: no usable evidence, never a pass
        return Verdict(result=Result.INCONCLUSIVE, reason=f"canary {den} count is not finite ({facts})", **common)
    if not _reported(ev, den, "canary", t):
        return Verdict(result=Result.INCONCLUSIVE, warming_up=settling, reason=(
            f"no data for {den} from the canary{ev.why_missing(den, 'canary')}; need {check.min_samples:g} "
            f"{den}"), **common)
    if total_canary < check.min_samples:
        return Verdict(result=Result.INCONCLUSIVE, warming_up=settling, reason=(
            f"too little canary traffic: {total_canary:g} {den} (need {check.min_samples:g}); {facts}"
            f"{ev.why_missing(den, 'canary')}"), **common)
    return Verdict(result=Result.PASS, reason=f"no evidence the canary is worse: {facts}; {stat}", **common)


def _numerator_missing(ev: Evidence, num: str, den: str, t: int) -> str | None:
    """Why the rate cannot be judged when an arm reports its denominator but never its numerator (a
    histogram without the objective's bucket has requests but no `slow`); None when both are there."""
    silent = [arm for arm in ("canary", "baseline")
              if _reported(ev, den, arm, t) and not _reported(ev, num, arm, t)]
    if not silent:
        return None
    why = "".join(ev.why_missing(num, arm) for arm in silent[:1])
    return (f"no data for {num} from the {' and the '.join(silent)}{why}, though {den} has data: a missing "
            f"signal is never a pass (is its query right? `guardian doctor SERVICE` checks every signal)")


def _sign(check: CompareCheck, ev: Evidence, t: int, base: dict) -> Verdict:
    signal = check.signal or ""
    g_c, g_b = ev.array(signal, "canary")[: t + 1], ev.array(signal, "baseline")[: t + 1]
    margin = check.effective_tolerance
    warmup, every = _warmup(check, ev.step_seconds), _every(check, ev.step_seconds)
    cum = _cumulative_llr(ev, ("sign", signal, margin), t,
                          lambda lo, hi: sign_log_lr(g_c[lo:hi], g_b[lo:hi], margin=margin))
    result = staggered_from_cumulative(cum, t, check.alpha, warmup=warmup, every=every)
    since = result.start if result.start is not None else warmup
    seg = slice(min(since, t + 1), t + 1)
    pairs = ~(np.isnan(g_c[seg]) | np.isnan(g_b[seg]))
    worse = int(np.sum(g_c[seg][pairs] > (1 + margin) * g_b[seg][pairs]))
    n_pairs = int(np.count_nonzero(pairs))
    mean_c = float(g_c[seg][pairs].sum()) / n_pairs if n_pairs else None
    mean_b = float(g_b[seg][pairs].sum()) / n_pairs if n_pairs else None
    ratio = mean_c / mean_b if mean_c is not None and mean_b else None
    stat = f"e_value={result.e_value:.3g} (reject at {result.threshold:.3g}, alpha={check.alpha:g})"
    facts = (f"canary {signal} above {1 + margin:g}x baseline in {worse} of {int(pairs.sum())} ticks since tick "
             f"{since}" + (f"; means {mean_c:.4g} vs {mean_b:.4g}" if ratio is not None else ""))
    common = {**base, "value": ratio, "threshold": 1 + margin, "sample_size": float(pairs.sum()), "statistic": stat}
    if result.rejected:
        return Verdict(result=Result.FAIL, reason=f"{signal} worse than baseline: {facts}; {stat}", **common)
    paired = int(np.sum(~(np.isnan(g_c[warmup:]) | np.isnan(g_b[warmup:]))))
    if t < warmup or paired < 3:
        return Verdict(result=Result.INCONCLUSIVE, warming_up=t < warmup + 3,
                       reason=f"not enough paired values yet ({paired}): {facts}", **common)
    return Verdict(result=Result.PASS, reason=f"no evidence the canary is worse: {facts}; {stat}", **common)


def _collapse(check: CompareCheck, ev: Evidence, t: int, base: dict) -> Verdict:
    signal = check.signal or ""
    n_c, n_b = ev.array(signal, "canary")[: t + 1], ev.array(signal, "baseline")[: t + 1]
    warmup = _warmup(check, ev.step_seconds)
    if not (_reported(ev, signal, "canary", t) or _reported(ev, signal, "baseline", t)):
        return Verdict(result=Result.INCONCLUSIVE, warming_up=t < warmup, **base, reason=(
            f"no data for {signal} from either arm{ev.why_missing(signal, 'canary')}: nothing to judge a "
            "collapse by"))
    p, run, baseline, share = collapse_p_value(n_c, n_b, t, warmup=warmup)
    # checked at every tick: Bonferroni over the looks so far and the two tests keeps the whole rollout at alpha
    alpha_t = check.alpha / 2 / max(1, t + 1 - warmup)
    common = {**base, "value": p, "threshold": alpha_t, "sample_size": baseline,
              "statistic": f"p=hypergeometric(no canary {signal} among the baseline's {baseline:g} in the run)"}
    if p <= alpha_t and run >= COLLAPSE_MIN_TICKS and _missed(baseline, share) >= COLLAPSE_MIN_MISSED:
        return Verdict(result=Result.FAIL, **common, reason=(
            f"the canary stopped getting {signal}: none for {run} ticks while the baseline got {baseline:g} "
            f"(canary share was {share:.3g} before); p = {p:.3g} <= alpha/looks {alpha_t:.3g}"))
    p_flap, zeros, b_flap, s_flap = flapping_p_value(n_c, n_b, t, warmup=warmup, window=COLLAPSE_WINDOW,
                                                     min_zero=FLAP_MIN_ZERO)
    if p_flap <= alpha_t and _missed(b_flap, s_flap) >= COLLAPSE_MIN_MISSED:
        return Verdict(result=Result.FAIL, **{**common, "value": p_flap, "sample_size": b_flap, "statistic": (
            f"p=sum of hypergeometric over the C({COLLAPSE_WINDOW},{zeros}) picks of empty ticks (no canary {signal} "
            f"among the baseline's {b_flap:g})")}, reason=(
            f"the canary keeps dropping out: no {signal} in {zeros} of its last {COLLAPSE_WINDOW} ticks while the "
            f"baseline got {b_flap:g} in them (canary share otherwise {s_flap:.3g}); p = {p_flap:.3g} <= "
            f"alpha/looks {alpha_t:.3g}"))
    return Verdict(result=Result.PASS, **common, reason=(
        f"canary traffic has not collapsed (zero-{signal} run of {run} ticks, p = {p:.3g}; {zeros} of the last "
        f"{COLLAPSE_WINDOW} ticks empty)"))


def _missed(baseline: float, share: float) -> float:
    """The canary requests an empty stretch took away: the baseline's requests in it at the canary's share."""
    return baseline * share / (1 - share) if 0 < share < 1 else 0.0


def _trend(check: CompareCheck, ev: Evidence, t: int, base: dict) -> Verdict:
    signal = check.signal or ""
    g_c, g_b = ev.array(signal, "canary")[: t + 1], ev.array(signal, "baseline")[: t + 1]
    warmup = _warmup(check, ev.step_seconds)

    def ratio(lo: int, hi: int) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = g_c[lo:hi] / g_b[lo:hi]
        r[~np.isfinite(r)] = np.nan
        return r

    # The trend starts at the first tick both arms report from (not at a fixed tick: a canary whose
    # start was delayed, by a crash of the guardian say, would otherwise never get an early level). In the bake
    # it starts again after the flip, warm-up included: the BAKE brought the new version up to its full replica
    # count (an arm's memory is summed over its replicas), so its level before the flip says nothing of a leak.
    since = warmup
    if (bake_from := bake_start(ev)) is not None and t >= bake_from:
        since = bake_from + warmup
    seen = np.flatnonzero(~np.isnan(ratio(since, t + 1)))
    first = since + int(seen[0]) if seen.size else since
    key = ("trend_level0", signal, warmup, since)
    level0 = ev.cache.get(key)  # the early level is fixed once its six ticks have passed
    if level0 is None:
        early = ratio(first, first + 6)
        if np.count_nonzero(~np.isnan(early)) >= 3:
            level0 = float(np.nanmedian(early))
            if t >= first + 6:
                ev.cache[key] = level0
    recent = ratio(max(first, t - TREND_TICKS + 1), t + 1)
    growth_limit = check.effective_tolerance
    if level0 is None or np.count_nonzero(~np.isnan(recent)) < 6:
        return Verdict(result=Result.INCONCLUSIVE, warming_up=t < first + TREND_TICKS, **base,
                       reason=f"not enough {signal} values yet for a trend", threshold=growth_limit)
    ok = ~np.isnan(recent)
    last3 = recent[ok][-3:].tolist()
    level = statistics.median(last3) if last3 else level0
    growth = level / level0 - 1 if level0 > 0 else 0.0
    if growth <= growth_limit:  # the trend only matters once the growth is beyond the limit
        stat = f"growth {growth:+.1%} within {growth_limit:.0%}; trend not tested"
        return Verdict(result=Result.PASS, **base, value=growth, threshold=growth_limit,
                       sample_size=float(ok.sum()), statistic=stat,
                       reason=f"canary/baseline {signal} changed {growth:+.1%} (limit {growth_limit:.0%})")
    tau, p = mann_kendall(recent[ok])
    stat = f"kendall_tau={tau:.2f} p={p:.2g} over {int(ok.sum())} ticks"
    common = {**base, "value": growth, "threshold": growth_limit, "sample_size": float(ok.sum()), "statistic": stat}
    if growth > growth_limit and tau > 0 and p < TREND_P:
        return Verdict(result=Result.FAIL, **common, reason=(
            f"canary/baseline {signal} grew {growth:.1%} (limit {growth_limit:.0%}) and keeps rising ({stat})"))
    return Verdict(result=Result.PASS, **common, reason=f"canary/baseline {signal} changed {growth:+.1%} ({stat})")


def mann_kendall(y: np.ndarray) -> tuple[float, float]:
    """Kendall's tau of y against time and the one-sided p-value of an upward trend (normal
    approximation of the Mann-Kendall S statistic; ties ignored)."""
    n = len(y)
    if n < 3:
        return 0.0, 1.0
    upper = np.triu(np.sign(y[None, :] - y[:, None]), k=1)
    s = float(upper.sum())
    pairs = n * (n - 1) / 2
    sd = math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    z = (s - 1) / sd if s > 0 else (s + 1) / sd if s < 0 else 0.0
    return s / pairs, 0.5 * math.erfc(z / math.sqrt(2))
