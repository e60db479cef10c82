"""Decision quality on a freshly generated held-out set drawn like the bench recordings.

    .venv/bin/python benchmarks/heldout.py [--seed 1] [--count 300] [--novel] [--shift NAME[,NAME]]... [--window]
                                           [--out DIR] [--bench ../shared/bench]

Generates COUNT guardian-recording/v1 files (labels as in the bench: truth, kind, onset_tick, rps,
canary_share, base_error_rate, warmup_ticks) into a new folder under /tmp (never the repository or
the shared bench), runs `guardian replay DIR --json`, `bench.py score` and `bench.py peers`, and
prints the guardian beside the peers, per kind (with how many of each kind the guardian paused: a pause is
neither a rollback nor a promotion), the healthy recordings it rolled back with the decision's reason, and the
generated set's statistics beside the bench's.

The generator's parameters were measured on the 300 bench recordings: traffic rps × U(0.7, 1.3) ×
(1 + U(0.05, 0.15)·sin(2πt/180 + φ)) × lognormal(σ 0.15) per tick, split binomially between the arms;
error rates × gamma(mean 1.05, cv 0.3) and slow rates × lognormal(σ 0.3) per tick and arm; p99
U(0.08, 0.6) s × lognormal(σ 0.08); cpu 2 s × the traffic wave × (1 + N(0, 0.1)); memory 250 MB ×
(1 + N(0, 0.01)); 2% of (tick, arm) scrapes missing; warm-up: p99 ×3 and slow ×8 for 3 ticks; onset
uniform in the first third of 90, 180 or 360 ticks. The bad kinds' shapes are measured the same way
(ramp ×1 → ×10 and leak ×1 → ×4 from onset to the end, the leak's errors rising in its second half;
a crash loop is down half its ticks and errs ×5 when up).
--novel adds kinds of trouble the bench does not hold: latency_creep (p99 and slow rise linearly to
×5), partial_errors (one of 2, 4 or 8 canary instances fails 10× as often), error_flap (errors ×10
in bursts of 2–6 ticks every 15–40 ticks) and canary_dies (the canary stops serving at onset).

--window gives each recording the 600 s before its rollout (models `#before`: the service's errors, requests,
slow requests and p99 over 60 ticks drawn like its baseline, with the same burstiness, from a generator of its own
so the series are unchanged), as a recording the guard writes live carries it: the rate test's level test runs.
--shift NAME (repeatable or comma-separated; default none: the recordings are byte for byte those of the same seed
without the option) draws every recording, healthy and bad, from a shifted distribution the judge was never tuned on,
and labels it with labels["shift"] (the list of shifts) and, for the shifts placed in time, labels["shift_detail"]
(where and how strong). The kinds, the other labels and the onset logic stay as above.
  bursty  errors far burstier: the per-tick, per-arm gamma factor on the error rate has cv 1.0 (not 0.3), and each
          arm's error rate bursts ×5 for 1–3 ticks, a burst starting at 2% of its ticks (each arm on its own).
  outage  a dependency outage hits both arms at once, once per recording: for 6–30 ticks (1–5 min) placed uniformly,
          both arms' error rates × U(20, 100) (capped at 1) and p99 × U(3, 10), the same factors in both arms.
  surge   a traffic surge on both arms: for 10–60 ticks placed uniformly, traffic × U(3, 8), the same factor in
          both arms (CPU, which follows the traffic wave, with it), and p99 × 1.5 in both arms.
  flaky   the canary's scrapes fail one time in four: 25% of the canary's ticks missing (null in every signal of
          the tick); the baseline keeps the bench's 2%.
  low     low traffic: rps drawn uniformly from [0.2, 1.0] (requests/s over both arms) instead of the bench's levels
          (the level per recording and tick then varies as above: × U(0.7, 1.3) × the wave).
Shifts combine (--shift outage,flaky). A shifted set keeps the unshifted set's kinds in the same order; its
recordings are fresh draws (the shifts' own draws move the random stream), not the unshifted ones plus a shift.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from decision_quality import COLUMNS, REPO, load_bench
from scipy.stats import ks_2samp

STEP = 10
BAD = ("error_x1.5", "error_x2", "error_x5", "error_x20", "latency_x3", "latency_x10", "error_ramp", "memory_leak",
       "crashloop")
NOVEL = ("latency_creep", "partial_errors", "error_flap", "canary_dies")
SIGNALS = ("requests", "errors", "slow", "p99_seconds", "cpu_seconds", "memory_bytes")
SHIFTS = ("bursty", "outage", "surge", "flaky", "low")


def parse_shifts(values: list[str] | None) -> tuple[str, ...]:
    """--shift values (repeated, comma-separated) as a tuple in SHIFTS' order, each once; ValueError on an unknown."""
    names = {n.strip() for v in values or () for n in v.split(",") if n.strip()}
    unknown = sorted(names - set(SHIFTS))
    if unknown:
        raise ValueError(f"unknown shift {', '.join(unknown)} (known: {', '.join(SHIFTS)})")
    return tuple(n for n in SHIFTS if n in names)


def both_arm_shifts(shifts: tuple[str, ...], n: int, rng: np.random.Generator):
    """Multipliers on both arms' traffic, error rate and p99 (outage, surge), and where they were placed."""
    traffic, err, p99 = np.ones(n), np.ones(n), np.ones(n)
    detail = {}
    if "outage" in shifts:
        ticks = int(rng.integers(6, 31))
        start = int(rng.integers(0, n - ticks + 1))
        error_x, p99_x = float(rng.uniform(20, 100)), float(rng.uniform(3, 10))
        err[start:start + ticks] *= error_x
        p99[start:start + ticks] *= p99_x
        detail["outage"] = {"start_tick": start, "ticks": ticks, "error_x": round(error_x, 2), "p99_x": round(p99_x, 2)}
    if "surge" in shifts:
        ticks = int(rng.integers(10, 61))
        start = int(rng.integers(0, n - ticks + 1))
        traffic_x = float(rng.uniform(3, 8))
        traffic[start:start + ticks] *= traffic_x
        p99[start:start + ticks] *= 1.5
        detail["surge"] = {"start_tick": start, "ticks": ticks, "traffic_x": round(traffic_x, 2), "p99_x": 1.5}
    return traffic, err, p99, detail


def error_bursts(n: int, rng: np.random.Generator, rate: float = 0.02, factor: float = 5.0) -> np.ndarray:
    """One arm's bursty shift: ×factor on the error rate for 1–3 ticks from a start at `rate` of the ticks."""
    out = np.ones(n)
    starts, lengths = rng.random(n) < rate, rng.integers(1, 4, n)
    for t in np.flatnonzero(starts):
        out[t:t + lengths[t]] = factor
    return out


def kind_weights(novel: bool) -> dict[str, float]:
    """The bench's mix: 49% healthy, 3% silent canaries, the rest split evenly among the bad kinds."""
    bad = BAD + NOVEL if novel else BAD
    return {"healthy": 0.49, "silent": 0.03, **{k: 0.48 / len(bad) for k in bad}}


def canary_shape(kind: str, n: int, onset: int | None, rng: np.random.Generator):
    """Multipliers on the canary's traffic, error rate, latency and memory, tick by tick."""
    t = np.arange(n)
    after = t >= onset if onset is not None else np.zeros(n, bool)
    u = np.clip((t - (onset or 0)) / (n - (onset or 0)), 0, 1) * after  # 0 → 1 from onset to the end
    req, err, lat, mem = (np.ones(n) for _ in range(4))
    if kind == "silent":
        req[:] = 0
    elif kind.startswith("error_x"):
        err[after] = float(kind[len("error_x"):])
    elif kind.startswith("latency_x"):
        lat[after] = float(kind[len("latency_x"):])
    elif kind == "error_ramp":
        err = 1 + 9 * u
    elif kind == "memory_leak":
        mem, err = 1 + 3 * u, 1 + np.maximum(0, 3 * u - 1.5)
    elif kind == "crashloop":
        req[after & (rng.random(n) < 0.5)] = 0
        err[after] = 5
    elif kind == "latency_creep":
        lat = 1 + 4 * u
    elif kind == "partial_errors":
        err[after] = 1 + 9 / rng.choice([2, 4, 8])
    elif kind == "error_flap":
        start = onset
        while start < n:
            err[start:start + rng.integers(2, 7)] = 10
            start += rng.integers(15, 41)
    elif kind == "canary_dies":
        req[after] = 0
    return req, err, lat, mem


WINDOW_TICKS = 60  # --window: the 600 s before the rollout that the guard fetches live (`bake_before`)
START = "2026-01-05T12:00:00Z"


def before_window(wrng: np.random.Generator, level: float, p_err: float, p_slow: float, p99_base: float,
                  shifts: tuple[str, ...]) -> dict:
    """The service's counts over the WINDOW_TICKS before the rollout, every instance the previous version, drawn
    like the rollout's baseline (the same burstiness, no onset, no outage or surge): the `#before` entry a live
    recording carries in its models (the rate test's level reference)."""
    wave = wrng.lognormal(0, 0.15, WINDOW_TICKS)
    req = wrng.poisson(level * wave)
    cv = 1.0 if "bursty" in shifts else 0.3
    err_m = wrng.gamma(1 / cv**2, 1.05 * cv**2, WINDOW_TICKS)
    if "bursty" in shifts:
        err_m = err_m * error_bursts(WINDOW_TICKS, wrng)
    err = wrng.binomial(req, np.minimum(1, p_err * err_m))
    slow = wrng.binomial(req, np.minimum(1, p_slow * wrng.lognormal(0, 0.3, WINDOW_TICKS)))
    end = datetime.fromisoformat(START.replace("Z", "+00:00")).timestamp()
    return {"window": [end - WINDOW_TICKS * STEP, end], "missing": {},
            "before": {"requests": float(req.sum()), "errors": float(err.sum()), "slow": float(slow.sum()),
                       "p99_seconds": round(float(p99_base * wrng.lognormal(0, 0.08)), 6)}}


def make_recording(rng: np.random.Generator, index: int, kind: str, shifts: tuple[str, ...] = (),
                   wrng: np.random.Generator | None = None) -> dict:
    n = int(rng.choice([90, 180, 360]))
    if "low" in shifts:
        rps, share = round(float(rng.uniform(0.2, 1.0)), 4), float(rng.choice([0.05, 0.1, 0.25, 0.5]))
    else:
        rps, share = float(rng.choice([0.5, 2.0, 10.0, 50.0, 200.0])), float(rng.choice([0.05, 0.1, 0.25, 0.5]))
    p_err, p_slow = float(rng.choice([0.0005, 0.002, 0.01, 0.03])), float(rng.choice([0.002, 0.01, 0.02]))
    warmup = 3 if rng.random() < 1 / 3 else 0
    truth = {"healthy": "good", "silent": "no_traffic"}.get(kind, "bad")
    onset = int(rng.integers(0, n // 3)) if truth == "bad" else None
    t = np.arange(n)
    wave = (1 + rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * t / 180 + rng.uniform(0, 2 * np.pi))) \
        * rng.lognormal(0, 0.15, n)
    level = rps * STEP * rng.uniform(0.7, 1.3)
    p99_base = rng.uniform(0.08, 0.6)
    warm = t < warmup
    shapes = {"canary": canary_shape(kind, n, onset, rng), "baseline": tuple(np.ones(n) for _ in range(4))}
    traffic_x, err_x, p99_x, detail = both_arm_shifts(shifts, n, rng)
    wave = wave * traffic_x  # surge: the traffic (and the CPU, which follows it) of both arms
    err_cv = 1.0 if "bursty" in shifts else 0.3
    series: dict[str, dict[str, list]] = {s: {} for s in SIGNALS}
    for arm, (req_m, err_m, lat_m, mem_m) in shapes.items():
        if arm == "canary":
            lat_p99, lat_slow = lat_m * np.where(warm, 3, 1), lat_m * np.where(warm, 8, 1)
        else:
            lat_p99 = lat_slow = lat_m
        req = rng.poisson(level * wave * (share if arm == "canary" else 1 - share) * req_m)
        if "bursty" in shifts:
            err_m = err_m * error_bursts(n, rng)
        err_m = err_m * err_x
        err = rng.binomial(req, np.minimum(1, p_err * err_m * rng.gamma(1 / err_cv**2, 1.05 * err_cv**2, n)))
        slow = rng.binomial(req, np.minimum(1, p_slow * lat_slow * rng.lognormal(0, 0.3, n)))
        p99 = np.where(req > 0, p99_base * lat_p99 * p99_x * rng.lognormal(0, 0.08, n), np.nan)
        cpu = np.maximum(0, 2 * wave * (1 + rng.normal(0, 0.1, n)))
        if arm == "canary" and kind in ("silent", "canary_dies"):
            cpu = cpu * req_m  # no process, no CPU (a crash loop keeps restarting and burning CPU)
        mem = 2.5e8 * mem_m * (1 + rng.normal(0, 0.01, n))
        missing = rng.random(n) < (0.25 if arm == "canary" and "flaky" in shifts else 0.02)
        for name, values, digits in zip(SIGNALS, (req, err, slow, p99, cpu, mem), (0, 0, 0, 6, 6, 6), strict=True):
            values = np.where(missing, np.nan, values)
            series[name][arm] = [None if np.isnan(v) else round(float(v), digits) for v in values]
    labels = {"truth": truth, "kind": kind, "onset_tick": onset, "rps": rps, "canary_share": share,
              "base_error_rate": p_err, "warmup_ticks": warmup}
    if shifts:  # unshifted recordings keep exactly the bench's labels
        labels["shift"] = list(shifts)
        if detail:
            labels["shift_detail"] = detail
    doc = {"format": "guardian-recording/v1", "service": f"svc-{index}", "step_seconds": STEP,
           "start": START, "series": series, "labels": labels}
    if wrng is not None:  # its own generator: the series are the same with or without it
        doc["models"] = {"#before": before_window(wrng, level, p_err, p_slow, p99_base, shifts)}
    return doc


def generate(out: Path, seed: int, count: int, novel: bool, shifts: tuple[str, ...] = (),
             window: bool = False) -> None:
    rng = np.random.default_rng(seed)
    wrng = np.random.default_rng([seed, 600]) if window else None
    weights = kind_weights(novel)
    kinds = rng.choice(list(weights), size=count, p=list(weights.values()))
    out.mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(kinds):
        (out / f"heldout-{seed}-{i:04d}.json").write_text(json.dumps(make_recording(rng, i, str(kind), shifts, wrng)))


def recording_stats(folder: Path) -> dict[str, np.ndarray]:
    """Per-recording statistics read from the series alone (comparable between any two folders)."""
    rows = []
    for f in sorted(folder.glob("*.json")):
        s = json.loads(f.read_text())["series"]
        a = {(k, arm): np.array([np.nan if v is None else v for v in s[k][arm]], float)
             for k in ("requests", "errors", "slow", "p99_seconds") for arm in ("canary", "baseline")}
        cr, br, be = a["requests", "canary"], a["requests", "baseline"], a["errors", "baseline"]
        resid = be - br * np.nansum(be) / max(np.nansum(br), 1)
        rows.append({"ticks": len(br), "requests/s (both arms)": np.nanmean(cr + br) / STEP,
                     "canary share of requests": np.nansum(cr) / max(np.nansum(cr + br), 1),
                     "baseline error rate": np.nansum(be) / max(np.nansum(br), 1),
                     "baseline errors var/mean": np.nanvar(resid) / max(np.nanmean(be), 1e-9),
                     "baseline traffic cv": np.nanstd(br) / max(np.nanmean(br), 1e-9),
                     "baseline slow rate": np.nansum(a["slow", "baseline"]) / max(np.nansum(br), 1),
                     "baseline p99 median (s)": np.nanmedian(a["p99_seconds", "baseline"]),
                     "missing scrapes": np.mean(np.isnan(np.r_[cr, br])),
                     "canary ticks with 0 requests": np.mean(cr[~np.isnan(cr)] == 0)})
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def print_table(table: dict[str, dict], columns, label: str = "policy") -> None:
    def cell(v) -> str:
        return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    width = max(map(len, [*table, label]))
    print(f"{label:<{width}}  " + "  ".join(f"{c:>{max(len(c), 8)}}" for c in columns))
    for name, row in table.items():
        print(f"{name:<{width}}  " + "  ".join(f"{cell(row.get(c)):>{max(len(c), 8)}}" for c in columns))


def read_decisions(decisions: Path) -> dict[str, dict]:
    """The replay's JSON lines by recording file name."""
    return {Path(o["file"]).name: o for o in (json.loads(line) for line in decisions.read_text().splitlines()
                                               if line.strip())}


def per_kind(bench, folder: Path, decisions: Path) -> dict[str, dict]:
    """Each kind's own figure per policy: false rollbacks (healthy), promotions (silent), detection (bad), and how
    many the guardian paused (neither rolled back nor promoted)."""
    recs = dict(bench.load_dir(str(folder)))
    made = {"guardian": {f: (o["decision"], o.get("tick")) for f, o in read_decisions(decisions).items()}}
    for name, policy in bench.PEERS.items():
        made[name] = {f: policy(rec) for f, rec in recs.items()}
    figure = {"good": ("false_rollback_rate", "rolled back"), "no_traffic": ("silent_canary_promoted_rate", "promoted"),
              "bad": ("detection_rate", "detected")}
    table = {}
    for kind in sorted({r["labels"]["kind"] for r in recs.values()}, key=lambda k: (k not in ("healthy", "silent"), k)):
        files = [f for f, r in recs.items() if r["labels"]["kind"] == kind]
        truth = recs[files[0]]["labels"]["truth"]
        row = {"n": len(files)}
        for policy, decided in made.items():
            scored = bench.score([(recs[f]["labels"], *decided[f]) for f in files])
            row[policy] = scored[figure[truth][0]] if scored[truth] else "-"
        row["guardian paused"] = sum(made["guardian"][f][0] == "pause" for f in files)
        guardian = bench.score([(recs[f]["labels"], *made["guardian"][f]) for f in files])
        row["guardian ttd_median_s"] = guardian["ttd_median_s"] if truth == "bad" else "-"
        table[f"{kind}{' (novel)' if kind in NOVEL else ''}: {figure[truth][1]}"] = row
    return table


def healthy_outcomes(folder: Path, decisions: Path) -> dict:
    """The healthy recordings' decisions: how many were promoted and paused, and each rollback with its reason."""
    made = read_decisions(decisions)
    healthy = {f.name: rec["labels"] for f in sorted(folder.glob("*.json"))
               if (rec := json.loads(f.read_text()))["labels"]["kind"] == "healthy"}
    count = {d: sum(made[f]["decision"] == d for f in healthy) for d in ("promote", "pause", "rollback")}
    rolled = [{"file": f, "tick": made[f].get("tick"), "reason": made[f].get("reason"),
               **({"shift_detail": labels["shift_detail"]} if "shift_detail" in labels else {})}
              for f, labels in healthy.items() if made[f]["decision"] == "rollback"]
    return {"n": len(healthy), "promoted": count["promote"], "paused": count["pause"],
            "rolled_back": count["rollback"], "rollbacks": rolled}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--novel", action="store_true", help="add kinds of trouble not in the bench folder")
    p.add_argument("--shift", action="append", metavar="NAME[,NAME]",
                   help=f"draw every recording from a shifted distribution: {', '.join(SHIFTS)} (repeatable)")
    p.add_argument("--window", action="store_true",
                   help="give each recording the 600 s before its rollout (models #before), as a live one carries: "
                        "the rate test's level test then runs")
    p.add_argument("--out", type=Path, help="a new folder outside the repository (default: a new one under /tmp)")
    p.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "bench")
    a = p.parse_args()
    try:
        shifts = parse_shifts(a.shift)
    except ValueError as e:
        p.error(str(e))
    out = (a.out or Path(tempfile.mkdtemp(prefix=f"guardian-heldout-{a.seed}-"))).resolve()
    for forbidden in (REPO, a.bench.resolve().parent):
        if out.is_relative_to(forbidden):
            p.error(f"--out {out} is inside {forbidden}")
    folder, decisions = out / "recordings", out / "decisions.jsonl"
    if any(folder.glob("*.json")):
        p.error(f"{folder} already holds recordings")
    began = time.perf_counter()
    generate(folder, a.seed, a.count, a.novel, shifts, a.window)
    generated = time.perf_counter()
    with decisions.open("w") as fh:
        subprocess.run([str(Path(sys.executable).with_name("guardian")), "replay", str(folder), "--json"],
                       stdout=fh, check=True)
    replayed = time.perf_counter()
    scorer = ["python3", str(a.bench / "bench.py")]
    ours = json.loads(subprocess.run([*scorer, "score", str(folder), str(decisions)], capture_output=True,
                                     text=True, check=True).stdout)
    peers = json.loads(subprocess.run([*scorer, "peers", str(folder)], capture_output=True, text=True,
                                      check=True).stdout)
    bench = load_bench(a.bench)
    print(f"held-out set: {a.count} recordings, seed {a.seed}{', with novel kinds' if a.novel else ''}"
          f"{', shifted: ' + ', '.join(shifts) if shifts else ''}"
          f"{', with the 600 s before each rollout (level test)' if a.window else ''}, in {folder}")
    print_table({"guardian": ours, **peers}, ("good", "bad", "no_traffic", *COLUMNS))
    print()
    print_table(per_kind(bench, folder, decisions),
                ("n", "guardian", "guardian paused", *bench.PEERS, "guardian ttd_median_s"), "kind")
    healthy = healthy_outcomes(folder, decisions)
    print(f"healthy: {healthy['n']} recordings, the guardian promoted {healthy['promoted']}, paused "
          f"{healthy['paused']}, rolled back {healthy['rolled_back']}")
    for r in healthy["rollbacks"]:
        where = "; ".join(f"{k} ticks {d['start_tick']}-{d['start_tick'] + d['ticks'] - 1}"
                          for k, d in r.get("shift_detail", {}).items())
        print(f"  rolled back: {r['file']} at tick {r['tick']}{f' ({where})' if where else ''}: {r['reason']}")
    print()
    ref, new = recording_stats(a.bench / "recordings"), recording_stats(folder)
    stats = {name: {"bench p10/p50/p90": "/".join(f"{q:.3g}" for q in np.nanquantile(ref[name], [0.1, 0.5, 0.9])),
                    "held-out p10/p50/p90": "/".join(f"{q:.3g}" for q in np.nanquantile(new[name], [0.1, 0.5, 0.9])),
                    "KS p": f"{ks_2samp(ref[name][~np.isnan(ref[name])], new[name][~np.isnan(new[name])]).pvalue:.2f}"}
             for name in ref}
    print_table(stats, ("bench p10/p50/p90", "held-out p10/p50/p90", "KS p"), "per recording")
    print("(two-sample KS; share, error and slow rates sit on 3-4 levels, so their p also moves with how often each"
          " level was drawn)")
    done = time.perf_counter()
    print(f"generate {generated - began:.1f} s, replay {replayed - generated:.1f} s, scoring and statistics "
          f"{done - replayed:.1f} s, total {done - began:.1f} s")
    print(json.dumps({"benchmark": "heldout", "seed": a.seed, "count": a.count, "novel": a.novel, "shift": list(shifts),
                      "window": a.window, "dir": str(out), "guardian": ours, "peers": peers,
                      "healthy": {k: v for k, v in healthy.items() if k != "rollbacks"},
                      "healthy_rolled_back": [r["file"] for r in healthy["rollbacks"]],
                      "seconds": round(done - began, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
