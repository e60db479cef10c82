"""Decision quality on a freshly generated held-out set drawn like the bench recordings.

    .venv/bin/python benchmarks/heldout.py [--seed 1] [--count 300] [--novel] [--out DIR] [--bench ../shared/bench]

Generates COUNT guardian-recording/v1 files (labels as in the bench: truth, kind, onset_tick, rps,
canary_share, base_error_rate, warmup_ticks) into a new folder under /tmp (never the repository or
the shared bench), runs `guardian replay DIR --json`, `bench.py score` and `bench.py peers`, and
prints the guardian beside the peers, per kind, and the generated set's statistics beside the bench's.

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
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from decision_quality import COLUMNS, REPO, load_bench
from scipy.stats import ks_2samp

STEP = 10
BAD = ("error_x1.5", "error_x2", "error_x5", "error_x20", "latency_x3", "latency_x10", "error_ramp", "memory_leak",
       "crashloop")
NOVEL = ("latency_creep", "partial_errors", "error_flap", "canary_dies")
SIGNALS = ("requests", "errors", "slow", "p99_seconds", "cpu_seconds", "memory_bytes")


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


def make_recording(rng: np.random.Generator, index: int, kind: str) -> dict:
    n = int(rng.choice([90, 180, 360]))
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
    series: dict[str, dict[str, list]] = {s: {} for s in SIGNALS}
    for arm, (req_m, err_m, lat_m, mem_m) in shapes.items():
        if arm == "canary":
            lat_p99, lat_slow = lat_m * np.where(warm, 3, 1), lat_m * np.where(warm, 8, 1)
        else:
            lat_p99 = lat_slow = lat_m
        req = rng.poisson(level * wave * (share if arm == "canary" else 1 - share) * req_m)
        err = rng.binomial(req, np.minimum(1, p_err * err_m * rng.gamma(1 / 0.09, 1.05 * 0.09, n)))
        slow = rng.binomial(req, np.minimum(1, p_slow * lat_slow * rng.lognormal(0, 0.3, n)))
        p99 = np.where(req > 0, p99_base * lat_p99 * rng.lognormal(0, 0.08, n), np.nan)
        cpu = np.maximum(0, 2 * wave * (1 + rng.normal(0, 0.1, n)))
        if arm == "canary" and kind in ("silent", "canary_dies"):
            cpu = cpu * req_m  # no process, no CPU (a crash loop keeps restarting and burning CPU)
        mem = 2.5e8 * mem_m * (1 + rng.normal(0, 0.01, n))
        missing = rng.random(n) < 0.02
        for name, values, digits in zip(SIGNALS, (req, err, slow, p99, cpu, mem), (0, 0, 0, 6, 6, 6), strict=True):
            values = np.where(missing, np.nan, values)
            series[name][arm] = [None if np.isnan(v) else round(float(v), digits) for v in values]
    return {"format": "guardian-recording/v1", "service": f"svc-{index}", "step_seconds": STEP,
            "start": "2026-01-05T12:00:00Z", "series": series,
            "labels": {"truth": truth, "kind": kind, "onset_tick": onset, "rps": rps, "canary_share": share,
                       "base_error_rate": p_err, "warmup_ticks": warmup}}


def generate(out: Path, seed: int, count: int, novel: bool) -> None:
    rng = np.random.default_rng(seed)
    weights = kind_weights(novel)
    kinds = rng.choice(list(weights), size=count, p=list(weights.values()))
    out.mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(kinds):
        (out / f"heldout-{seed}-{i:04d}.json").write_text(json.dumps(make_recording(rng, i, str(kind))))


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


def per_kind(bench, folder: Path, decisions: Path) -> dict[str, dict]:
    """Each kind's own figure per policy: false rollbacks (healthy), promotions (silent), detection (bad)."""
    recs = dict(bench.load_dir(str(folder)))
    made = {"guardian": {}}
    for line in decisions.read_text().splitlines():
        o = json.loads(line)
        made["guardian"][Path(o["file"]).name] = (o["decision"], o.get("tick"))
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
        guardian = bench.score([(recs[f]["labels"], *made["guardian"][f]) for f in files])
        row["guardian ttd_median_s"] = guardian["ttd_median_s"] if truth == "bad" else "-"
        table[f"{kind}{' (novel)' if kind in NOVEL else ''}: {figure[truth][1]}"] = row
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--novel", action="store_true", help="add kinds of trouble not in the bench folder")
    p.add_argument("--out", type=Path, help="a new folder outside the repository (default: a new one under /tmp)")
    p.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "bench")
    a = p.parse_args()
    out = (a.out or Path(tempfile.mkdtemp(prefix=f"guardian-heldout-{a.seed}-"))).resolve()
    for forbidden in (REPO, a.bench.resolve().parent):
        if out.is_relative_to(forbidden):
            p.error(f"--out {out} is inside {forbidden}")
    folder, decisions = out / "recordings", out / "decisions.jsonl"
    if any(folder.glob("*.json")):
        p.error(f"{folder} already holds recordings")
    began = time.perf_counter()
    generate(folder, a.seed, a.count, a.novel)
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
    print(f"held-out set: {a.count} recordings, seed {a.seed}{', with novel kinds' if a.novel else ''}, in {folder}")
    print_table({"guardian": ours, **peers}, ("good", "bad", "no_traffic", *COLUMNS))
    print()
    print_table(per_kind(bench, folder, decisions), ("n", "guardian", *bench.PEERS, "guardian ttd_median_s"), "kind")
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
    print(json.dumps({"benchmark": "heldout", "seed": a.seed, "count": a.count, "novel": a.novel, "dir": str(out),
                      "guardian": ours, "peers": peers, "seconds": round(done - began, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
