"""`guardian baseline fit`: fit seasonal baseline models (the 3σ forecast) from Prometheus history.

Wired into the main command by guardian/cli/root.py:  app.add_typer(baseline_app, name="baseline")

What each standard signal's model models (all per step, `{{window}}` = the step; see
guardian/forecast/history.py FORECAST_SIGNALS for the PromQL):

    requests      requests/s served, rate over the step                       (default)
    p99_seconds   99th percentile latency within the step                     (default)
    cpu_seconds   CPU cores used: rate of process_cpu_seconds_total           (default)
    memory_bytes  resident memory, averaged over the step, summed over pods   (default)
    errors        5xx answers/s (0 when none)                                 (only with --signal)
    slow          requests/s slower than the latency objective                (only with --signal)

Exit codes: 0 every requested model written; 2 Prometheus unreachable, no history, bad options.
Without --signal the default signals are tried and one without history is skipped with a warning
(exit 2 only if none could be fitted); a signal named with --signal must be fitted or it is exit 2.
"""
from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape

from guardian.cli.console import EXIT_ERROR, err, out
from guardian.errors import NoData, SourceUnavailable
from guardian.forecast.history import DEFAULT_SIGNALS, FORECAST_SIGNALS, SIGNAL_ALIASES, fit_from_prometheus
from guardian.forecast.model_files import write_model
from guardian.rules.models import parse_duration

baseline_app = typer.Typer(
    help="Fit seasonal baseline models (the 3σ forecast) from Prometheus history into models/.",
    no_args_is_help=True,
)

_UNITS = {"w": 7 * 86400, "d": 86400}
_LONG = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([wd])\s*$")


def parse_span(text: str) -> float:
    """'5m' -> 300, '1w' -> 604800, '3d' -> 259200, '90' -> 90 (seconds)."""
    if m := _LONG.match(text):
        return float(m.group(1)) * _UNITS[m.group(2)]
    text = text.strip()
    try:
        return parse_duration(float(text) if re.fullmatch(r"\d+(?:\.\d+)?", text) else text)
    except ValueError:
        raise ValueError(f"bad duration {text!r}: use e.g. 300, 30s, 5m, 1h, 3d or 1w") from None


def parse_time(text: str) -> float:
    """'now', Unix seconds, or ISO 8601 ('2026-01-05T12:00:00Z'; no zone means UTC)."""
    text = text.strip()
    if text.lower() == "now":
        return datetime.now(UTC).timestamp()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad time {text!r}: use now, Unix seconds or ISO 8601 like 2026-01-05T12:00:00Z") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(EXIT_ERROR)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _human(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and math.isclose(seconds / size, round(seconds / size)):
            return f"{round(seconds / size)}{unit}"
    return f"{seconds:g}s"


@baseline_app.callback()
def _baseline() -> None:
    """Seasonal baseline models: `guardian baseline fit SERVICE` writes models/SERVICE/SIGNAL.json."""


@baseline_app.command("fit")
def fit_command(
    service: Annotated[str, typer.Argument(help="the service label value to fit models for")],
    signal: Annotated[list[str] | None, typer.Option(
        "--signal", "-s", show_default=", ".join(DEFAULT_SIGNALS),
        help="signal to fit (repeatable): " + ", ".join(FORECAST_SIGNALS))] = None,
    prometheus_url: Annotated[str, typer.Option(
        "--prometheus-url", envvar="GUARDIAN_PROMETHEUS_URL", help="Prometheus base URL")] = "http://127.0.0.1:9090",
    weeks: Annotated[int, typer.Option(min=1, help="weeks of history; the forecast is their median")] = 3,
    step: Annotated[str, typer.Option(help="bucket / evaluation step, e.g. 5m (also the rate() window)")] = "5m",
    models_dir: Annotated[Path, typer.Option("--models-dir", envvar="GUARDIAN_MODELS_DIR",
                                             help="where models/SERVICE/SIGNAL.json go")] = Path("models"),
    arm: Annotated[str, typer.Option(help="the arm label value whose history is fitted")] = "baseline",
    arm_label: Annotated[str, typer.Option(help="the label that tells the arms apart")] = "track",
    period: Annotated[str, typer.Option(help="the seasonal period, e.g. 1w or 1d")] = "1w",
    history: Annotated[str | None, typer.Option(
        show_default="--weeks", help="history to read, e.g. 3d (overrides --weeks; one season per whole period)")]
    = None,
    end: Annotated[str | None, typer.Option(
        show_default="now", help="fit up to this time (ISO 8601 or Unix seconds); "
                                 "give the rollout's start so the model never sees the release")] = None,
    query: Annotated[str | None, typer.Option(
        show_default="the signal's built-in query",
        help="custom PromQL template for the one --signal given ({{service}}, {{arm}}, {{arm_label}}, {{window}}); "
             "must return one series")] = None,
    floor_fraction: Annotated[float | None, typer.Option(
        min=0.0, show_default="per signal", help="σ floor as a fraction of the forecast level")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds per Prometheus query")] = 30.0,
) -> None:
    """Fit seasonal baseline models of SERVICE from Prometheus history into MODELS_DIR/SERVICE/SIGNAL.json."""
    try:
        step_s = parse_span(step)
        period_s = parse_span(period)
        history_s = parse_span(history) if history else weeks * 7 * 86400.0
        end_s = parse_time(end) if end else None
    except ValueError as e:
        raise _fail(str(e)) from None
    if step_s <= 0 or period_s <= 0 or not math.isclose(period_s / step_s, round(period_s / step_s)):
        raise _fail(f"--period ({_human(period_s)}) must be a whole number of steps ({_human(step_s)})")
    if history_s < period_s / 2:
        raise _fail(f"--history ({_human(history_s)}) must cover at least half a period ({_human(period_s)})")

    explicit = bool(signal)
    names = [SIGNAL_ALIASES.get(s, s) for s in (signal or DEFAULT_SIGNALS)]
    names = list(dict.fromkeys(names))
    if query is not None and len(names) != 1:
        raise _fail("--query needs exactly one --signal (the name its model is stored under)")
    unknown = [n for n in names if n not in FORECAST_SIGNALS and query is None]
    if unknown:
        raise _fail(f"unknown signal {unknown[0]!r}; known: {', '.join(FORECAST_SIGNALS)} (or give --query)")

    seasons = max(1, int(history_s // period_s + 1e-9))
    out.print(f"fitting {service} ({arm_label}={arm}) from {prometheus_url}: {_human(history_s)} of history, "
              f"{_human(step_s)} step, period {_human(period_s)}, {seasons} season(s)", markup=False)
    written, skipped = [], []
    for name in names:
        spec = FORECAST_SIGNALS.get(name)
        template = query if query is not None else spec.promql  # type: ignore[union-attr]
        options: dict[str, object] = {}
        if spec is not None:
            options = {"floor_fraction": spec.floor_fraction, "min_sigma": spec.min_sigma}
            info = {"unit": spec.unit, "models": spec.models, "signal_type": spec.source_type.value,
                    "transform": spec.transform}
        else:
            info = {"models": "custom query", "transform": "value"}
        if floor_fraction is not None:
            options["floor_fraction"] = floor_fraction
        out.print(f"  {name}: querying ...", markup=False)
        try:
            model = fit_from_prometheus(
                prometheus_url, service, name, query_template=template, arm=arm, arm_label=arm_label,
                history=timedelta(seconds=history_s), step=step_s, end=end_s, timeout=timeout,
                period=period_s, seasons=seasons, source_info=info, **options,
            )
        except SourceUnavailable as e:
            raise _fail(f"{e}\nis Prometheus running at {prometheus_url}? (--prometheus-url / "
                        "GUARDIAN_PROMETHEUS_URL)") from None
        except NoData as e:
            if explicit:
                raise _fail(str(e)) from None
            err.print(f"[yellow]skipped {escape(name)}:[/yellow] {escape(str(e))}", highlight=False)
            skipped.append(name)
            continue
        except ValueError as e:
            raise _fail(f"{name}: {e}") from None
        path = write_model(model, models_dir)
        written.append(path)
        h = model.history
        if h["seasons_observed"] < seasons or h["coverage"] < 0.9:
            err.print(f"[yellow]warning:[/yellow] {escape(name)}: only {h['seasons_observed']} of {seasons} "
                      f"season(s) and {h['coverage']:.0%} of the period had data (the gaps are interpolated); "
                      "refit when more history exists", highlight=False)
        unit = f" {info['unit']}" if "unit" in info else ""
        _, sigma = model.forecast_many(model.fitted_at + model.bucket * np.arange(model.buckets))
        out.print(
            f"  {name}: wrote {path} ({h['samples']} samples, {h['seasons_observed']} season(s), "
            f"coverage {h['coverage']:.0%}; level median {_fmt(float(np.median(model.profile)))}{unit}, "
            f"σ median {_fmt(float(np.median(sigma)))}{unit}, "
            f"trend {_fmt(model.slope * 86400)}{unit}/day)", markup=False,
        )
    if not written:
        raise _fail(f"no model written for {service}: no history for any of {', '.join(names)} "
                    f"(skipped: {', '.join(skipped)})")
    out.print(f"ok: {len(written)} model(s) in {Path(models_dir) / service}"
              + (f"; skipped {', '.join(skipped)}" if skipped else ""), markup=False)
