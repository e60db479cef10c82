"""The benchmark suite (issue 8): one command, one results table, written as JSON and markdown.

    .venv/bin/python benchmarks/run_all.py [--only scale,intake,replay,quality] [--quick]
                                           [--json benchmarks/results/latest.json] [--markdown PATH]

Sections:
  scale    500 concurrent rollouts, 6 signals, 10 s ticks (benchmarks/scale.py, batched and per-rollout
           queries): tick lag p50/p99, Prometheus queries per second and per tick, guardian CPU and peak
           memory; "not available" when scale.py is missing or does not import.
  intake   Alertmanager webhook intake against `guardian serve` (benchmarks/webhook_intake.py).
  replay   recordings per second over the bench recordings (guardian/engine/replay.py, one process per core).
  quality  decision quality on the bench recordings beside the reference policies
           (benchmarks/decision_quality.py: the same replay, scored by the bench's scorer).
Each row shows the issue's target and whether it is met. `--quick` runs smaller sizes (a smoke run:
its figures are not the ones to report).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling benchmark modules

SECTIONS = ("scale", "intake", "replay", "quality")
NOT_AVAILABLE = "not available"
QUALITY_COLUMNS = ("false_rollback_rate", "detection_rate", "ttd_median_s")

SIZES = {
    False: {"scale": {"rollouts": 500, "signals": 6, "tick_seconds": 10.0, "duration": 120.0},
            "intake": {"posts": 20000, "clients": 16}},
    True: {"scale": {"rollouts": 100, "signals": 6, "tick_seconds": 10.0, "duration": 30.0},
           "intake": {"posts": 3000, "clients": 16}},
}


def row(section: str, metric: str, value: Any, target: str = "", met: bool | None = None,
        note: str = "") -> dict[str, Any]:
    return {"section": section, "metric": metric, "value": value, "target": target, "met": met, "note": note}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _check(value: Any, ok: Callable[[float], bool]) -> bool | None:
    v = _num(value)
    return None if v is None else bool(ok(v))


# -- rows from each section's raw result (pure: the unit tests feed them made-up results) -------------
def scale_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    if not result.get("available"):
        why = result.get("reason", "")
        return [row("scale", m, NOT_AVAILABLE, t, None, why) for m, t in (
            ("tick lag p99 (s)", "< 1 tick"), ("guardian peak memory (MB)", "< 300"),
            ("Prometheus queries per tick, batched vs one per rollout per signal", ">= 10x fewer"))]
    b, p = result.get("batched") or {}, result.get("per_rollout") or {}
    tick = float(result.get("tick_seconds", 10.0))
    n = f"{result.get('rollouts')} rollouts x {result.get('signals')} signals, {tick:g} s ticks"
    naive = (result.get("rollouts") or 0) * (result.get("signals") or 0)
    out = [
        row("scale", "tick lag p50 (s), batched", b.get("tick_lag_p50_s"), "", None, n),
        row("scale", "tick lag p99 (s), batched", b.get("tick_lag_p99_s"), f"< {tick:g} (one tick)",
            _check(b.get("tick_lag_p99_s"), lambda v: v < tick)),
        row("scale", "tick lag p99 (s), per-rollout", p.get("tick_lag_p99_s"), "", None),
        row("scale", "Prometheus queries/s, batched", b.get("prom_queries_per_s"), "", None),
        row("scale", "Prometheus queries/s, per-rollout", p.get("prom_queries_per_s"), "", None),
        row("scale", "queries per tick, batched", b.get("queries_per_tick"), "", None),
        row("scale", "queries per tick, per-rollout", p.get("queries_per_tick"), "", None),
    ]
    qb, qp = _num(b.get("queries_per_tick")), _num(p.get("queries_per_tick"))
    ratio = round(qp / qb, 1) if qb and qp is not None else None
    out.append(row("scale", "queries per tick: per-rollout / batched", ratio, ">= 10",
                   _check(ratio, lambda v: v >= 10)))
    vs_naive = round(naive / qb, 1) if qb and naive else None
    out.append(row("scale", "queries per tick: rollouts x signals / batched", vs_naive, ">= 10",
                   _check(vs_naive, lambda v: v >= 10)))
    out.append(row("scale", "guardian CPU (%), batched", b.get("guardian_cpu_percent"), "", None))
    peak = max((v for v in (_num(b.get("guardian_peak_rss_mb")), _num(p.get("guardian_peak_rss_mb")))
                if v is not None), default=None)
    out.append(row("scale", "guardian peak memory (MB)", peak, "< 300", _check(peak, lambda v: v < 300)))
    return out


def intake_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    n = f"{r.get('posts')} posts, {r.get('clients')} clients; {r.get('client', '')}"
    return [
        row("intake", "webhook posts/s", r.get("posts_per_s"), ">= 1000", _check(r.get("posts_per_s"),
                                                                                 lambda v: v >= 1000), n),
        row("intake", "webhook p50 (ms)", r.get("p50_ms")),
        row("intake", "webhook p99 (ms)", r.get("p99_ms"), "< 50", _check(r.get("p99_ms"), lambda v: v < 50)),
        row("intake", "webhook posts lost", r.get("lost"), "0", _check(r.get("lost"), lambda v: v == 0)),
    ]


def replay_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    n = r.get("recordings")
    return [row("replay", "recordings/s", r.get("recordings_per_second"), "", None,
                f"{n} bench recordings in {r.get('replay_seconds')} s, one process per core"),
            row("replay", f"seconds for the {n} bench recordings", r.get("replay_seconds"), "< 30 (issue 3)",
                _check(r.get("replay_seconds"), lambda v: v < 30))]


def quality_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    g = r.get("guardian") or {}
    targets = {"false_rollback_rate": ("<= 0.03 (issue 3)", lambda v: v <= 0.03),
               "detection_rate": (">= 0.55 (issue 3)", lambda v: v >= 0.55),
               "ttd_median_s": ("<= 180 (issue 3)", lambda v: v <= 180)}
    out = []
    for col in QUALITY_COLUMNS:
        target, ok = targets[col]
        peers = ", ".join(f"{name} {scores.get(col)}" for name, scores in (r.get("peers") or {}).items())
        out.append(row("quality", f"guardian {col}", g.get(col), target, _check(g.get(col), ok), f"peers: {peers}"))
    return out


ROWS = {"scale": scale_rows, "intake": intake_rows, "replay": replay_rows, "quality": quality_rows}


# -- running the sections ----------------------------------------------------------------------------
def run_scale(quick: bool) -> dict[str, Any]:
    try:
        scale = importlib.import_module("scale")
    except Exception as e:  # noqa: BLE001 - missing or broken: the row says so, the rest runs
        return {"available": False, "reason": f"benchmarks/scale.py: {type(e).__name__}: {e}"}
    size = SIZES[quick]["scale"]
    result: dict[str, Any] = {"available": True, **size}
    for name, batched in (("batched", True), ("per_rollout", False)):
        result[name] = scale.run(**size, batched=batched)
    return result


def run_intake(quick: bool) -> dict[str, Any]:
    import webhook_intake

    return webhook_intake.run(**SIZES[quick]["intake"])


def run_bench() -> dict[str, Any]:
    import decision_quality

    return decision_quality.evaluate()


def run_sections(sections: list[str], quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    bench: dict[str, Any] | None = None  # replay and quality share one replay of the bench
    for s in sections:
        began = time.perf_counter()
        print(f"[{s}] running{' (quick)' if quick else ''} ...", file=sys.stderr, flush=True)
        try:
            if s == "scale":
                results[s] = run_scale(quick)
            elif s == "intake":
                results[s] = run_intake(quick)
            else:
                bench = bench or run_bench()
                results[s] = bench
            rows += ROWS[s](results[s])
        except Exception as e:  # noqa: BLE001 - one failed section does not lose the others
            traceback.print_exc()
            results[s] = {"error": f"{type(e).__name__}: {e}"}
            rows.append(row(s, "(section)", f"failed: {type(e).__name__}: {e}"[:120], "", False))
        print(f"[{s}] done in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return results, rows


# -- output ------------------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def _met(m: bool | None) -> str:
    return {True: "met", False: "NOT MET", None: ""}[m]


HEADERS = ("section", "metric", "value", "target", "met")


def text_table(rows: list[dict[str, Any]]) -> str:
    cells = [HEADERS] + [(r["section"], r["metric"], _cell(r["value"]), r["target"], _met(r["met"])) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(HEADERS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADERS + ("note",)) + " |", "|" + "---|" * (len(HEADERS) + 1)]
    for r in rows:
        cells = (r["section"], r["metric"], _cell(r["value"]), r["target"], _met(r["met"]), r["note"])
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def report(results: dict[str, Any], rows: list[dict[str, Any]], *, command: str, quick: bool) -> dict[str, Any]:
    return {"benchmark": "run_all", "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command, "quick": quick,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "rows": rows, "results": results}


def parse_sections(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in chosen]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not figures to report)")
    p.add_argument("--json", type=Path, default=HERE / "results" / "latest.json", help="where to write the JSON")
    p.add_argument("--markdown", type=Path, help="where to write the markdown table (default: beside the JSON, .md)")
    args = p.parse_args(argv)
    sections = parse_sections(args.only)
    command = "python benchmarks/run_all.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    results, rows = run_sections(sections, args.quick)
    out = report(results, rows, command=command, quick=args.quick)
    print(text_table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    md = args.markdown or args.json.with_suffix(".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(f"Command: `{command}` ({out['generated_at']}, {os.cpu_count()} cores)\n\n"
                  + markdown_table(rows) + "\n")
    print(f"written: {args.json}, {md}")
    return 0 if all(r["met"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
