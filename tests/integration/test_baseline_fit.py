"""`guardian baseline fit` against a REAL Prometheus serving backfilled history.

Days of synthetic history cannot be scraped in a test, so they are written as an OpenMetrics file
and turned into TSDB blocks with `promtool tsdb create-blocks-from openmetrics` in the data dir
*before* Prometheus starts (PrometheusServer keeps its TSDB in workdir/"data"); Prometheus then
serves them through query_range like any other data. Four days of history stay well inside the
default 15-day retention (which is counted back from the newest block, so older backfilled blocks
would be deleted at start-up). The seasonal period is a day here, so three seasons fit in that.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from guardian.cli.baseline import baseline_app
from guardian.errors import NoData, SourceUnavailable
from guardian.forecast.history import FORECAST_SIGNALS as BASELINE_SIGNALS
from guardian.forecast.history import fit_from_prometheus, query_history
from guardian.forecast.model import DAY
from guardian.forecast.model_files import read_model
from guardian.judge.forecast_monitor import ForecastMonitor as BaselineMonitor
from guardian.sources.prometheus import PrometheusSource

from .conftest import PrometheusServer, free_port, prometheus_binary

pytestmark = pytest.mark.integration

SAMPLE = 60  # seconds between backfilled samples
STEP = 300.0
HISTORY_DAYS = 4
REQUESTS = BASELINE_SIGNALS["requests"].promql
MEMORY = BASELINE_SIGNALS["memory_bytes"].promql
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def rps(t: np.ndarray | float) -> np.ndarray:
    """Requests per second of the synthetic service: a daily cycle between 4 and 16."""
    return 10 + 6 * np.sin(2 * np.pi * np.asarray(t, dtype=float) / DAY)


def memory(t: np.ndarray | float) -> np.ndarray:
    return 2e8 + 2e7 * np.cos(2 * np.pi * np.asarray(t, dtype=float) / DAY)


def openmetrics(now: float) -> str:
    """Four days of `shop` (codes 200 and 500, a counter reset) and six hours of `fresh`."""
    rng = np.random.default_rng(5)
    end = int(now) // SAMPLE * SAMPLE - SAMPLE
    ts = np.arange(end - HISTORY_DAYS * DAY, end + 1, SAMPLE)
    ok = np.cumsum(SAMPLE * rps(ts) * (1 + rng.normal(0, 0.02, ts.size)))
    reset = ts.size // 2
    ok[reset:] -= ok[reset - 1]  # the process restarted: the counter starts again from zero
    errors = np.cumsum(rng.poisson(SAMPLE * 0.05, ts.size)).astype(float)
    mem = memory(ts) * (1 + rng.normal(0, 0.005, ts.size))
    fresh = ts[ts > end - 6 * 3600]
    shop, fresh_sel = 'service="shop",track="baseline"', 'service="fresh",track="baseline"'
    lines = ["# TYPE http_requests counter"]
    lines += [f'http_requests_total{{{shop},code="200"}} {v:.3f} {t}' for t, v in zip(ts, ok, strict=True)]
    lines += [f'http_requests_total{{{shop},code="500"}} {v:.0f} {t}' for t, v in zip(ts, errors, strict=True)]
    lines += [f'http_requests_total{{{fresh_sel},code="200"}} {i * 600} {t}' for i, t in enumerate(fresh)]
    lines += ["# TYPE process_resident_memory_bytes gauge"]
    lines += [f"process_resident_memory_bytes{{{shop}}} {v:.0f} {t}" for t, v in zip(ts, mem, strict=True)]
    return "\n".join(lines) + "\n# EOF\n"


@dataclass
class History:
    prom: PrometheusServer
    end: float  # the fits below are fitted up to here

    @property
    def url(self) -> str:
        return self.prom.url


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    binary = prometheus_binary()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's 'prometheus' package ships it)")
    workdir = tmp_path_factory.mktemp("prometheus-backfill")
    now = time.time()
    om = workdir / "history.om.txt"
    om.write_text(openmetrics(now))
    data = workdir / "data"
    done = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(data)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    prom = PrometheusServer([], workdir=workdir, binary=binary)
    assert prom.data_dir == data
    prom.start()
    try:
        yield History(prom, end=now)
    finally:
        prom.stop()


def fit_shop(h: History, signal: str = "requests", template: str = REQUESTS, **kw):
    options = dict(arm="baseline", history=timedelta(days=3), step=STEP, period=DAY, end=h.end, timeout=10)
    return fit_from_prometheus(h.url, "shop", signal, query_template=template, **(options | kw))


def test_fits_the_daily_pattern_from_backfilled_history(backfilled: History) -> None:
    model = fit_shop(backfilled)
    assert model.service == "shop" and model.signal == "requests" and model.seasons == 3
    assert model.period == DAY and model.bucket == STEP and model.buckets == 288
    assert model.history["coverage"] == 1.0 and model.history["seasons_observed"] == 3
    assert model.history["samples"] == 3 * 288
    assert model.source["query"] == 'sum(rate(http_requests_total{service="shop",track="baseline"}[300s]))'
    # the profile is the synthetic daily cycle (the rate over 5 min ends at the bucket's time)
    future = np.arange(model.fitted_at + STEP, model.fitted_at + DAY, STEP)
    centre, sigma = model.forecast_many(future)
    expected = rps(future - STEP / 2) + 0.05  # 200s and 500s together
    assert np.corrcoef(centre, expected)[0, 1] > 0.99
    assert np.max(np.abs(centre - expected)) < 0.5
    assert abs(model.slope) * DAY < 0.2  # no trend
    assert np.all(sigma > 0) and np.median(sigma) < 0.6
    # the counter reset inside the history did not leave a hole or a spike in the profile
    assert np.all(np.isfinite(model.profile)) and model.profile.max() < 16.6
    # memory: a gauge, averaged over each step
    mem = fit_shop(backfilled, "memory_bytes", MEMORY)
    assert np.max(np.abs(mem.forecast_many(future)[0] - memory(future - STEP / 2))) < 0.02 * 2e8
    # and the monitor built on it flags a doubled traffic after three periods
    mon = BaselineMonitor(model)
    results = [mon.update(t, 2 * rps(t)) for t in future[100:104]]
    assert [r[1] for r in results] == [False, False, True, True] and results[0][0] > 5


def test_long_ranges_are_read_in_chunks(backfilled: History) -> None:
    source = PrometheusSource(backfilled.url, timeout=10)
    promql = REQUESTS.replace("{{service}}", "shop").replace("{{arm_label}}", "track").replace(
        "{{arm}}", "baseline").replace("{{window}}", "300s")
    end = math.floor(backfilled.end / 60) * 60
    try:
        # 1-min evaluations over 3 days: 4,321 points, over Prometheus's 11,000 limit at 20 s
        whole = query_history(source, promql, end - 3 * DAY, end, 60, where="test")
        chunked = query_history(source, promql, end - 3 * DAY, end, 60, where="test", max_points=500)
    finally:
        source.close()
    assert whole[0].size == 4321 and np.array_equal(whole[0], chunked[0])
    assert np.array_equal(whole[1], chunked[1], equal_nan=True)
    assert np.all(np.diff(chunked[0]) == 60)  # no overlap, no gap
    a = fit_shop(backfilled)
    b = fit_shop(backfilled, max_points=100)
    assert np.array_equal(a.profile, b.profile) and np.array_equal(a.scale, b.scale)


def test_unreachable_prometheus_is_source_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="connection refused"):
        fit_from_prometheus(url, "shop", "requests", query_template=REQUESTS, arm="baseline", timeout=2)
    assert time.monotonic() - started < 5  # no retries
    result = CliRunner().invoke(baseline_app, ["fit", "shop", "--prometheus-url", url, "--timeout", "2"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "connection refused" in result.stderr and "is Prometheus running" in result.stderr


def test_no_history_is_nodata_with_a_clear_message(backfilled: History) -> None:
    with pytest.raises(NoData, match=r"no history for requests of ghost \(track=baseline\).*returned no series"):
        fit_from_prometheus(backfilled.url, "ghost", "requests", query_template=REQUESTS, arm="baseline",
                            history=timedelta(days=3), step=STEP, period=DAY)
    with pytest.raises(NoData, match=r"too little history for requests of fresh.*covers 25% of the 24 h period"):
        fit_from_prometheus(backfilled.url, "fresh", "requests", query_template=REQUESTS, arm="baseline",
                            history=timedelta(days=3), step=STEP, period=DAY)
    with pytest.raises(NoData, match="returned 2 series .differing in code.*sum"):
        fit_shop(backfilled, template='rate(http_requests_total{service="{{service}}"}[{{window}}])')
    with pytest.raises(SourceUnavailable, match="HTTP 400"):
        fit_shop(backfilled, template="sum(rate(nope[{{window}}])")


def cli(*args: str):
    result = CliRunner().invoke(baseline_app, ["fit", *args], env={"COLUMNS": "200"})
    return result, ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)


def test_cli_fit_writes_models(backfilled: History, tmp_path: Path) -> None:
    models = tmp_path / "models"
    common = ["--prometheus-url", backfilled.url, "--history", "3d", "--period", "1d", "--step", "5m",
              "--models-dir", str(models), "--end", str(backfilled.end)]
    result, out, err = cli("shop", *common)
    assert result.exit_code == 0, result.output
    assert "fitting shop (track=baseline)" in out and "3d of history, 5m step, period 1d, 3 season(s)" in out
    written = sorted(p.name for p in (models / "shop").iterdir())
    assert written == ["memory_bytes.json", "requests.json"]  # the defaults with history
    assert f"requests: wrote {models / 'shop' / 'requests.json'}" in out
    # p99_seconds and cpu_seconds have no series for this service: skipped, said why
    assert "skipped p99_seconds: no history for p99_seconds of shop" in err
    assert "skipped cpu_seconds" in err and "ok: 2 model(s)" in out
    model = read_model(models / "shop" / "requests.json")
    assert model.period == DAY and model.source["unit"] == "requests/s"
    assert model.source["transform"] == "rate_per_second" and model.fitted_at <= backfilled.end

    # an explicitly requested signal without history is an error (exit 2); so is any unknown one
    result, out, err = cli("shop", *common, "--signal", "requests", "--signal", "p99")
    assert result.exit_code == 2 and "no history for p99_seconds of shop" in err
    result, _, err = cli("ghost", *common)
    assert result.exit_code == 2 and "no model written for ghost" in err
    result, _, err = cli("shop", *common, "--signal", "bogus")
    assert result.exit_code == 2 and "unknown signal 'bogus'" in err
    result, _, err = cli("shop", *common, "--step", "7m")
    assert result.exit_code == 2 and "whole number of steps" in err

    # errors (not a default) and a custom query, stored under the name given
    result, out, _ = cli("shop", *common, "--signal", "errors")
    assert result.exit_code == 0, result.output
    assert read_model(models / "shop" / "errors.json").forecast(backfilled.end + 600)[0] == pytest.approx(0.05,
                                                                                                       abs=0.02)
    custom = 'sum(rate(http_requests_total{service="{{service}}",code="200"}[{{window}}]))'
    result, out, _ = cli("shop", *common, "--signal", "ok_rate", "--query", custom)
    assert result.exit_code == 0, result.output
    assert read_model(models / "shop" / "ok_rate.json").source["query"].startswith('sum(rate(http_requests_total{')
