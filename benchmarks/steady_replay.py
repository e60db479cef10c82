"""Weeks of normal seasonal traffic replayed through the watch: how often does it scale out for nothing?

    .venv/bin/python benchmarks/steady_replay.py [--weeks 10] [--seed-base 1000] [--nab DIR] [--out DIR]
        [--cusum both|on|off] [--sigma 3] [--consecutive 3] [--min-change 25%] [--no-trend]
        [--shift none|bursty|low|flaky] [--no-nab] [--json FILE]

Every recording is a watch's recording (guardian-recording/v1 with the `watch` object a live watch's recording
carries: engine/store.py `recording`) replayed through the real engine (guardian.engine.replay.replay_recording,
what `guardian replay` runs) under a rule file whose forecast check scales:

    - {name: traffic-forecast, kind: baseline, signal: requests, direction: above, sigma: 3, consecutive: 3,
       cusum: true, action: scale, replicas: 1}     # cusum: the rule default; each case is replayed with false too
    watch: {min_replicas: 2, max_replicas: 6, scale_in_after: 30m, cooldown: 10m}

(the check's period: the model's bucket, 5 minutes; a scaling check's `min_change` is 25% unless
`--min-change` sets it: 0 is the σ rule alone). `--sigma`, `--consecutive` change the check; `--no-trend`
fits without the trend term (fitting.fit's trend=False, which `guardian baseline fit` does not offer), to show
what the fitted trend contributes.

Each check's model is fitted by the real fitting code (guardian.forecast.fitting.fit, with the options `guardian
baseline fit` gives `requests`) on history before the replayed week only, and frozen into the recording.

1. NAB's artificialNoAnomaly series (two weeks at 5-minute steps each, read-only under /work/shared/nab): the
   model is fitted on the first week (a daily period: seven seasons, as `guardian baseline fit --period 1d
   --history 7d --step 5m` would), the second week is the recording (5-minute ticks; the value is requests/s).
   Target: 0 scale-outs per series.
2. Seasonal traffic of our own (`seasonal_rates`): a daily shape (a night trough, a morning ramp, a lunch and an
   evening peak), weekends at 70%, a level that wanders a few percent from day to day, Poisson arrivals and
   minute-to-minute overdispersion. Four weeks per seed: the model is fitted on the first three (a weekly
   period, three seasons: `guardian baseline fit`'s defaults), the fourth is the recording (one-minute ticks,
   the check judging 5-minute periods). The seeds reported (from --seed-base) were not used while the
   generator and the rules were put together (seeds 0-4 were). Target: 0 scale-outs per week.
3. Not blind: the same weeks with ×3 traffic for an hour (Wednesday 14:00), and each NAB second week with ×3 for
   an hour at its middle: each must scale out (and the seconds from the surge's start to the scale-out).
4. Shifted sets (`--shift`, our own weeks only with `--no-nab`): bursty (15% minute-to-minute noise, a level
   wandering ~6% from day to day), low (2 requests/s at the peak), flaky (10% of the ticks unanswered, in runs
   of 1-5): traffic unlike the one the check was built on.
Prints a table and one JSON line; `--out DIR` also writes every recording and its rule file (DIR/cusum-on,
DIR/cusum-off: replay them with `cd DIR/cusum-off && guardian replay . --rules rules.yaml`).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from guardian.engine.replay import replay_recording  # noqa: E402
from guardian.forecast.fitting import fit  # noqa: E402
from guardian.forecast.history import FORECAST_SIGNALS  # noqa: E402
from guardian.forecast.model import DAY, WEEK, SeasonalModel  # noqa: E402
from guardian.rules.loader import RuleSet, parse_text  # noqa: E402
from guardian.rules.models import Watch  # noqa: E402

NAB = Path("/work/shared/nab/data/artificialNoAnomaly")
CHECK = "traffic-forecast"
WATCH = {"min_replicas": 2, "max_replicas": 6, "scale_in_after": "30m", "cooldown": "10m"}
SURGE_AT = 2 * DAY + 14 * 3600  # Wednesday 14:00 of a week that starts on a Monday 00:00 UTC
SURGE_SECONDS = 3600.0
MONDAY = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC: where our own weeks begin


SIGMA, CONSECUTIVE, TREND = 3.0, 3, True  # the rule's and the fit's (set from the command line)
MIN_CHANGE: str | None = None  # the check's min_change (None: the rule default for a scaling check, 25%)


def rules_text(service: str, cusum: bool) -> str:
    return (f"service: {service}\n"
            "checks:\n"
            f"  - {{name: {CHECK}, kind: baseline, signal: requests, direction: above, sigma: {SIGMA:g}, "
            f"consecutive: {CONSECUTIVE}, cusum: {str(cusum).lower()}, "
            + (f"min_change: {MIN_CHANGE}, " if MIN_CHANGE is not None else "")
            + "action: scale, replicas: 1}\n"
            f"watch: {json.dumps(WATCH)}\n")


def ruleset(service: str, cusum: bool) -> RuleSet:
    return RuleSet.of(parse_text(rules_text(service, cusum), "rules.yaml"), "rules.yaml")  # as --out writes it


# -- models and recordings ----------------------------------------------------------------------------------
def fit_requests(ts: np.ndarray, rates: np.ndarray, *, service: str, period: float, step: float, seasons: int,
                 end: float, what: str) -> SeasonalModel:
    """`requests` (requests/s per `step`) fitted as `guardian baseline fit` fits it, on history up to `end`."""
    spec = FORECAST_SIGNALS["requests"]
    return fit(ts, rates, period=period, step=step, seasons=seasons, end=end, floor_fraction=spec.floor_fraction,
               min_sigma=spec.min_sigma, trend=TREND, service=service, signal="requests",
               source={"unit": spec.unit, "models": spec.models, "signal_type": spec.source_type.value,
                       "transform": spec.transform, "history": what})


def watch_recording(service: str, start: float, step: float, rates: np.ndarray, model: SeasonalModel,
                    gone: np.ndarray | None = None) -> dict[str, Any]:
    """A watch's recording of `rates` (requests/s, one per tick of `step` s from `start`): what
    engine/store.py `recording` writes for a watch (every replica the baseline arm between rollouts, the
    counter's increments per tick, the frozen model, the `watch` it started from and its rules)."""
    if model.fitted_at > start:
        raise ValueError("the model must be fitted on history before the recording")
    n = len(rates)
    return {
        "format": "guardian-recording/v1", "service": service, "step_seconds": step,
        "start": datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z"),
        "series": {"requests": {"canary": [None] * n, "baseline": [
            None if gone is not None and gone[i] else round(float(r) * step, 3) for i, r in enumerate(rates)]}},
        "labels": {"rollout_id": f"watch-{service}", "image": "", "phase": "progressing",
                   "rules": "rules.yaml", "unavailable_ticks": []},  # the rule file --out writes beside it
        "watch": {"image": "", "previous_image": None, "suspect": None, "promoted_at": None, "target": "noop",
                  "replicas": WATCH["min_replicas"], "replicas_reported": False, "scaled_replicas": 0,
                  "last_scale_at": None, "rules": Watch.model_validate(WATCH).model_dump()},
        "models": {CHECK: model.to_dict()},
    }


def replay(recording: dict[str, Any], name: str, cusum: bool) -> dict[str, Any]:
    """Replay through the real engine; the scale-outs (and refused ones), scale-ins, and when the first scale-out
    came (seconds from the recording's start)."""
    began = time.perf_counter()
    result = replay_recording(recording, name, ruleset(recording["service"], cusum))
    step = recording["step_seconds"]
    outs = [d for d in result.decisions if d["action"] == "scale" and d.get("replicas", 0) > 0]
    refused = [d for d in result.decisions if d["action"] == "notify" and "scale out" in d.get("reason", "")]
    ins = [d for d in result.decisions if d["action"] == "scale" and d.get("replicas", 0) < 0]
    first = (outs or refused or [None])[0]
    return {"name": name, "decision": result.decision, "ticks": len(recording["series"]["requests"]["baseline"]),
            "scale_outs": len(outs), "refused_scale_outs": len(refused), "scale_ins": len(ins),
            "scale_out_at_s": [(d["tick"] + 1) * step for d in outs],  # each decision's tick's end
            "refused_at_s": [(d["tick"] + 1) * step for d in refused],
            "first_scale_out_s": None if first is None else (first["tick"] + 1) * step,
            "first_reason": None if first is None else first["reason"][:300],
            "replay_seconds": round(time.perf_counter() - began, 2)}


def surge_met(row: dict[str, Any], surge_start: float | None) -> dict[str, Any]:
    """The row with the surge's start and the first scale-out during it (a refused one, at max_replicas already,
    adds nothing: it does not count), seconds from its start."""
    row["surge_start_s"] = surge_start
    if surge_start is not None:
        row["surge_scale_out_s"] = next((t - surge_start for t in sorted(row["scale_out_at_s"])
                                         if surge_start < t <= surge_start + SURGE_SECONDS), None)
    return row


# -- NAB ------------------------------------------------------------------------------------------------------
def read_nab(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ts = np.array([datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC).timestamp() for r in rows])
    return ts, np.array([float(r["value"]) for r in rows])


def nab_cases(folder: Path, cusum: bool, out: Path | None) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob("*.csv")):
        ts, values = read_nab(path)
        step = float(np.median(np.diff(ts)))
        week = round(WEEK / step)
        if len(ts) < 2 * week:
            raise ValueError(f"{path.name}: {len(ts)} points, two weeks need {2 * week}")
        service = path.stem.replace("_", "-")
        model = fit_requests(ts[:week], values[:week], service=service, period=DAY, step=step, seasons=7,
                             end=float(ts[week - 1]), what=f"NAB {path.name}, first week")
        second = values[week:2 * week]
        surged = second.copy()
        middle = week // 2
        surged[middle:middle + round(SURGE_SECONDS / step)] *= 3
        for label, rates in (("normal", second), ("x3 surge", surged)):
            rec = watch_recording(service, float(ts[week]), step, rates, model)
            name = f"nab-{path.stem}{'-surge' if label != 'normal' else ''}.json"
            if out is not None:
                (out / name).write_text(json.dumps(rec))
            row = replay(rec, name, cusum) | {"kind": "nab", "series": path.stem, "week": label}
            rows.append(surge_met(row, middle * step if label != "normal" else None))
    return rows


# -- our own seasonal traffic ----------------------------------------------------------------------------------
def daily_shape(hours: np.ndarray) -> np.ndarray:
    """Relative traffic by hour of the day: a night trough (~25% of the peak), a morning ramp, a lunch peak and a
    higher evening one."""
    def bump(centre: float, width: float) -> np.ndarray:
        d = (hours - centre + 12) % 24 - 12
        return np.exp(-0.5 * (d / width) ** 2)

    return 0.25 + 0.55 * bump(12.5, 2.5) + 0.75 * bump(20.0, 2.0) + 0.35 * bump(9.0, 1.5)


def seasonal_rates(seed: int, weeks: int = 4, *, step: float = 60.0, peak: float = 80.0, wander: float = 0.025,
                   cv: float = 0.05) -> np.ndarray:
    """Requests/s averaged over each `step` s, `weeks` weeks from a Monday 00:00 UTC: daily shape × weekday
    (weekends 70%) × a level that wanders from day to day (AR(1), innovations `wander`: ~3% by default) ×
    minute-to-minute overdispersion (a gamma factor, coefficient of variation `cv`), then Poisson arrivals."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(weeks * WEEK / step)) * step
    hours = (t % DAY) / 3600
    weekday = (t // DAY) % 7
    level = np.ones(weeks * 7)
    for d in range(1, level.size):
        level[d] = 1 + 0.6 * (level[d - 1] - 1) + rng.normal(0, wander)
    day_level = np.repeat(level, round(DAY / step))[: t.size]
    mean = peak * daily_shape(hours) * np.where(weekday >= 5, 0.7, 1.0) * day_level
    shape = 1 / cv**2  # 400: a 5% coefficient of variation
    overdispersed = mean * rng.gamma(shape, 1 / shape, t.size)
    return rng.poisson(overdispersed * step) / step


# the shifted sets (--shift): traffic unlike the one the check and its defaults were built on
SHIFTS: dict[str, dict[str, float]] = {
    "none": {},
    "bursty": {"cv": 0.15, "wander": 0.05},  # 15% minute-to-minute noise, a level wandering ~6% from day to day
    "low": {"peak": 2.0},                     # a quiet service: 2 requests/s at the peak, 0.5 at night
    "flaky": {"missing": 0.1},                # 10% of the ticks unanswered (flaky scrapes, in runs of 1-5)
}
SHIFT: dict[str, float] = {}


def flaky(seed: int, n: int, share: float) -> np.ndarray:
    """Which of `n` ticks go unanswered: runs of 1-5 ticks, `share` of them in all."""
    rng = np.random.default_rng(seed + 7919)
    gone = np.zeros(n, dtype=bool)
    while gone.mean() < share:
        at = int(rng.integers(n))
        gone[at:at + int(rng.integers(1, 6))] = True
    return gone


def own_cases(seeds: list[int], cusum: bool, out: Path | None) -> list[dict[str, Any]]:
    rows = []
    step, bucket = 60.0, 300.0
    per_week = round(WEEK / step)
    for seed in seeds:
        rates = seasonal_rates(seed, 4, step=step, **{k: v for k, v in SHIFT.items() if k != "missing"})
        ts = MONDAY + np.arange(rates.size) * step
        history = rates[: 3 * per_week].reshape(-1, round(bucket / step)).mean(axis=1)  # what rate()[5m] reads
        hts = MONDAY + np.arange(history.size) * bucket + bucket  # each 5-minute value at its window's end
        start = float(ts[3 * per_week])
        model = fit_requests(hts, history, service=f"shop-{seed}", period=WEEK, step=bucket, seasons=3,
                             end=start, what=f"benchmarks/steady_replay.py seasonal_rates seed {seed}, weeks 1-3")
        week4 = rates[3 * per_week:]
        surged = week4.copy()
        at = round(SURGE_AT / step)
        surged[at:at + round(SURGE_SECONDS / step)] *= 3
        gone = flaky(seed, week4.size, SHIFT["missing"]) if SHIFT.get("missing") else None
        for label, r in (("normal", week4), ("x3 surge", surged)):
            rec = watch_recording(f"shop-{seed}", start, step, r, model, gone)
            name = f"seasonal-{seed}{'-surge' if label != 'normal' else ''}.json"
            if out is not None:
                (out / name).write_text(json.dumps(rec))
            row = replay(rec, name, cusum) | {"kind": "seasonal", "series": f"seed {seed}", "week": label}
            rows.append(surge_met(row, SURGE_AT if label != "normal" else None))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=10, help="weeks of our own seasonal traffic (one seed each)")
    parser.add_argument("--seed-base", type=int, default=1000, help="the first seed (0-4 were used to build it)")
    parser.add_argument("--nab", type=Path, default=NAB, help="NAB's artificialNoAnomaly folder")
    parser.add_argument("--out", type=Path, help="also write every recording here")
    parser.add_argument("--cusum", choices=("both", "on", "off"), default="both",
                        help="the forecast check's CUSUM: on (the rule default), off, or both")
    parser.add_argument("--sigma", type=float, default=3.0, help="the check's sigma (the rule default: 3)")
    parser.add_argument("--consecutive", type=int, default=3, help="the check's consecutive periods")
    parser.add_argument("--min-change", help="the check's min_change (e.g. 0 or 10%%; default: the rule default)")
    parser.add_argument("--no-trend", action="store_true",
                        help="fit with trend=False (`guardian baseline fit` always fits the trend)")
    parser.add_argument("--shift", choices=tuple(SHIFTS), default="none",
                        help="our own weeks drawn unlike the default: bursty (15%% minute noise, ~6%% day-to-day "
                             "wander), low (2 requests/s at the peak), flaky (10%% of the ticks unanswered)")
    parser.add_argument("--no-nab", action="store_true", help="our own weeks only")
    parser.add_argument("--json", type=Path, help="also write the JSON document here (e.g. benchmarks/results/)")
    args = parser.parse_args(argv)
    global SIGMA, CONSECUTIVE, TREND, MIN_CHANGE
    MIN_CHANGE = args.min_change
    SIGMA, CONSECUTIVE, TREND = args.sigma, args.consecutive, not args.no_trend
    SHIFT.update(SHIFTS[args.shift])
    seeds = list(range(args.seed_base, args.seed_base + args.weeks))
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.cusum]
    results: dict[str, list[dict[str, Any]]] = {}
    for cusum in modes:
        out = None
        if args.out is not None:
            out = args.out / ("cusum-on" if cusum else "cusum-off")
            out.mkdir(parents=True, exist_ok=True)
            (out / "rules.yaml").write_text(rules_text("steady-replay", cusum))  # `guardian replay DIR --rules`
        nab = nab_cases(args.nab, cusum, out) if args.nab.is_dir() and not args.no_nab else []
        rows = nab + own_cases(seeds, cusum, out)
        results["cusum on" if cusum else "cusum off"] = rows

    print(f"{'rules':<10}{'kind':<9}{'series':<30}{'week':<10}{'ticks':>6}{'scale-outs':>11}{'refused':>8}"
          f"{'first out':>11}", flush=True)
    summary = {}
    for mode, rows in results.items():
        for r in rows:
            if r["surge_start_s"] is not None:  # a surge week: when the surge was met (from its start)
                first = "missed" if r.get("surge_scale_out_s") is None else f"+{r['surge_scale_out_s'] / 60:.0f} min"
            else:  # a normal week: when the first scale-out came
                first = "-" if r["first_scale_out_s"] is None else f"day {r['first_scale_out_s'] / DAY:.1f}"
            print(f"{mode:<10}{r['kind']:<9}{r['series']:<30}{r['week']:<10}{r['ticks']:>6}{r['scale_outs']:>11}"
                  f"{r['refused_scale_outs']:>8}{first:>11}", flush=True)
        normal = [r for r in rows if r["week"] == "normal"]
        surged = [r for r in rows if r["week"] != "normal"]
        caught = [r for r in surged if r["surge_scale_out_s"] is not None]
        summary[mode] = {
            "normal_weeks": len(normal), "normal_weeks_scaled_out": sum(r["scale_outs"] > 0 for r in normal),
            "scale_outs_in_normal_weeks": sum(r["scale_outs"] for r in normal),
            "refused_scale_outs_in_normal_weeks": sum(r["refused_scale_outs"] for r in normal),
            "nab_series": sum(r["kind"] == "nab" for r in normal),
            "surge_weeks": len(surged), "surges_scaled_out": len(caught),
            "surge_to_scale_out_s": sorted(r["surge_scale_out_s"] for r in caught),
        }
        s = summary[mode]
        lags = s["surge_to_scale_out_s"]
        within = f", {lags[0]:g}-{lags[-1]:g} s after they began" if lags else ""
        print(f"{mode}: {s['scale_outs_in_normal_weeks']} scale-outs (and {s['refused_scale_outs_in_normal_weeks']} "
              f"refused at max_replicas) in {s['normal_weeks']} normal weeks "
              f"({s['nab_series']} NAB, {s['normal_weeks'] - s['nab_series']} seasonal; "
              f"{s['normal_weeks_scaled_out']} weeks with any); {s['surges_scaled_out']} of {s['surge_weeks']} ×3 "
              f"surges scaled out{within}", flush=True)
    doc = {"benchmark": "steady_replay", "command": "benchmarks/steady_replay.py " + " ".join(argv or sys.argv[1:]),
           "seeds": seeds, "shift": args.shift, "watch": WATCH, "fit_trend": TREND,
           "rules": {m: rules_text("SERVICE", m == "cusum on") for m in results}, "summary": summary,
           "results": results}
    print(json.dumps(doc))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    ok = all(s["scale_outs_in_normal_weeks"] == s["refused_scale_outs_in_normal_weeks"] == 0
             and s["surges_scaled_out"] == s["surge_weeks"]
             for s in summary.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
