"""How many bad releases any judge could catch, and how fast: a generous oracle on recordings with known truth.

    .venv/bin/python benchmarks/oracle_bound.py [DIR ...] [--alpha 0.01] [--windows 90,400,600]

The oracle knows what no judge can: each bad recording's onset tick and the service's true base error rate
(labels.onset_tick, labels.base_error_rate, × 1.05, the mean of the generator's per-tick noise), and it takes no
penalty for looking many times. For an error kind (labels.kind error_* or partial_errors) it rejects by W seconds
after the onset if, for some t ≤ W, the canary's errors over [onset, onset + t] are beyond chance for their
requests at the true rate (one-sided Poisson, p < alpha: the most powerful test of a fixed window when the
excess is constant). Every other bad kind (latency, memory, crash loops, a canary that dies) is counted as
caught one tick after its onset. A judge
knows neither the onset nor the true rate (it must estimate the rate from the baseline) and pays for every look
(an anytime-valid test at level alpha), so this peeking oracle's counts are generous: in practice an upper
bound on what a judge at level alpha can catch within W, and its times a lower bound. A second oracle is a valid
sequential test: Wald's SPRT knowing the onset, the true rate and the true multiplier (the bench's kinds).

It prints, per folder: both oracles' caught share by the end of the recording; its median and p90 time to detect;
and for each window W, how many bad recordings it could catch within W — with what that means for a target
"caught >= C and p90 <= W": C x 90% of the bad recordings must be caught within W.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy.stats import poisson

REPO = Path(__file__).resolve().parent.parent


def _series(rec: dict, signal: str) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in rec["series"][signal]["canary"]], dtype=float)


def first_rejection_seconds(rec: dict, alpha: float) -> float | None:
    """Seconds from the onset until the oracle can reject (None: never within the recording)."""
    labels, step = rec["labels"], rec["step_seconds"]
    kind, onset = labels["kind"], labels["onset_tick"] or 0
    if not (kind.startswith("error") or kind == "partial_errors"):
        return float(step)  # latency, memory, crash loops, a dying canary: caught at once (generous)
    req, err = _series(rec, "requests")[onset:], _series(rec, "errors")[onset:]
    seen = np.isfinite(req) & np.isfinite(err)
    n, k = np.cumsum(np.where(seen, req, 0.0)), np.cumsum(np.where(seen, err, 0.0))
    p = poisson.sf(k - 1, n * labels["base_error_rate"] * 1.05)
    hit = np.flatnonzero((p < alpha) & seen)
    return float((hit[0] + 1) * step) if len(hit) else None


MULTIPLIER = {"error_x1.5": 1.5, "error_x2": 2.0, "error_x5": 5.0, "error_x20": 20.0}  # the bench's constant kinds


def sprt_seconds(rec: dict, alpha: float) -> float | None | str:
    """A valid sequential oracle: Wald's one-sided SPRT on the canary's errors from the onset, knowing the true base
    rate and the true multiplier (constant kinds, and the ramp ×1 → ×10 tick by tick), rejecting at 1/alpha.
    "n/a" for error kinds whose multiplier it cannot know from the labels (flaps, partial errors)."""
    labels, step = rec["labels"], rec["step_seconds"]
    kind, onset = labels["kind"], labels["onset_tick"] or 0
    if not (kind.startswith("error") or kind == "partial_errors"):
        return float(step)
    if kind not in MULTIPLIER and kind != "error_ramp":
        return "n/a"
    req, err = _series(rec, "requests")[onset:], _series(rec, "errors")[onset:]
    p0, llr = labels["base_error_rate"] * 1.05, 0.0
    for i, (n, k) in enumerate(zip(req, err, strict=True)):
        m = MULTIPLIER.get(kind) or 1 + 9 * i / max(len(req) - 1, 1)
        if not (np.isfinite(n) and np.isfinite(k)) or m <= 1:
            continue
        llr += k * np.log(m) - n * p0 * (m - 1)
        if llr >= np.log(1 / alpha):
            return float((i + 1) * step)
    return None


def report(folder: str, alpha: float, windows: list[float]) -> dict:
    times: list[tuple[str, float | None]] = []
    sprt: list[float | None | str] = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        rec = json.loads(Path(path).read_text())
        if rec["labels"]["truth"] == "bad":
            times.append((rec["labels"]["kind"], first_rejection_seconds(rec, alpha)))
            sprt.append(sprt_seconds(rec, alpha))
    bad = len(times)
    caught = sorted(t for _, t in times if t is not None)
    out = {"folder": folder, "alpha": alpha, "bad": bad, "caught": len(caught),
           "caught_share": round(len(caught) / bad, 4) if bad else None,
           "ttd_median_s": statistics.median(caught) if caught else None,
           "ttd_p90_s": float(np.percentile(caught, 90)) if caught else None,
           "sprt": _sprt_summary(sprt),
           "within": {str(int(w)): sum(t <= w for t in caught) for w in windows},
           "per_kind": {}}
    for kind in sorted({k for k, _ in times}):
        ts = [t for k, t in times if k == kind]
        out["per_kind"][kind] = {"n": len(ts), "caught": sum(t is not None for t in ts),
                                 **{f"within_{int(w)}s": sum(t is not None and t <= w for t in ts) for w in windows}}
    return out


def _sprt_summary(times: list[float | None | str]) -> dict | None:
    if any(t == "n/a" for t in times):
        return None  # kinds whose multiplier the labels do not give
    caught = sorted(t for t in times if t is not None)
    return {"caught": len(caught), "caught_share": round(len(caught) / len(times), 4) if times else None,
            "ttd_median_s": statistics.median(caught) if caught else None,
            "ttd_p90_s": float(np.percentile(caught, 90)) if caught else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", default=[str(REPO.parent / "shared" / "bench" / "recordings")])
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--windows", default="90,400,600", help="seconds after the onset, comma-separated")
    ap.add_argument("--json", action="store_true", help="one JSON object per folder")
    args = ap.parse_args(argv)
    windows = [float(w) for w in args.windows.split(",") if w]
    for folder in args.folders:
        if not glob.glob(os.path.join(folder, "*.json")):
            print(f"{folder}: no recordings (*.json)", file=sys.stderr)
            return 2
        r = report(folder, args.alpha, windows)
        if args.json:
            print(json.dumps(r))
            continue
        print(f"{folder}: {r['bad']} bad recordings, alpha {args.alpha}")
        print(f"  oracle caught by the end: {r['caught']} ({100 * r['caught_share']:.1f}%); time to detect median "
              f"{r['ttd_median_s']:.0f} s, p90 {r['ttd_p90_s']:.0f} s")
        if r["sprt"]:
            q = r["sprt"]
            print(f"  valid sequential oracle (SPRT knowing the onset, the rate and the multiplier): caught "
                  f"{q['caught']} ({100 * q['caught_share']:.1f}%), median {q['ttd_median_s']:.0f} s, "
                  f"p90 {q['ttd_p90_s']:.0f} s")
        for w in windows:
            got = r["within"][str(int(w))]
            print(f"  caught within {w:.0f} s of the onset: {got} ({100 * got / r['bad']:.1f}%) -> "
                  f"'p90 <= {w:.0f} s' allows at most {100 * got / 0.9 / r['bad']:.1f}% caught")
        for kind, v in r["per_kind"].items():
            print(f"    {kind}: {v['caught']}/{v['n']} by the end; " +
                  ", ".join(f"{v[f'within_{int(w)}s']} within {w:.0f} s" for w in windows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
