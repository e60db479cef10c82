"""benchmarks/heldout.py --shift: each shift changes the recordings the way its docstring says, and no shift changes
nothing."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from guardian.sources.recording import validate_recording

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
heldout = importlib.import_module("heldout")

SEED = 2020
ARMS = ("canary", "baseline")


def recordings(shifts: tuple[str, ...], kind: str = "healthy", count: int = 20) -> list[dict]:
    """One generator per recording: the i-th recording is the same service with or without a shift."""
    return [heldout.make_recording(np.random.default_rng([SEED, i]), i, kind, shifts) for i in range(count)]


def arr(rec: dict, signal: str, arm: str) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in rec["series"][signal][arm]], float)


def test_no_shift_is_todays_generator(tmp_path: Path) -> None:
    heldout.generate(tmp_path / "default", SEED, 12, novel=True)
    heldout.generate(tmp_path / "none", SEED, 12, novel=True, shifts=heldout.parse_shifts(None))
    assert [f.read_text() for f in sorted((tmp_path / "default").iterdir())] == \
        [f.read_text() for f in sorted((tmp_path / "none").iterdir())]
    assert all("shift" not in json.loads(f.read_text())["labels"] for f in (tmp_path / "none").iterdir())


def test_shift_names_parse_repeated_or_comma_separated() -> None:
    assert heldout.parse_shifts(["low,bursty", "outage", "low"]) == ("bursty", "outage", "low")
    with pytest.raises(ValueError, match="unknown shift spiky"):
        heldout.parse_shifts(["spiky"])


@pytest.mark.parametrize("kind", ["healthy", "error_x5", "crashloop"])
def test_shifted_recordings_keep_kind_labels_and_onset(kind: str) -> None:
    shifts = ("bursty", "outage", "surge", "flaky")
    for plain, shifted in zip(recordings((), kind, 5), recordings(shifts, kind, 5), strict=True):
        validate_recording(shifted, "shifted")
        labels = dict(shifted["labels"])
        assert labels.pop("shift") == list(shifts) and set(labels.pop("shift_detail")) == {"outage", "surge"}
        assert labels == plain["labels"]  # the same service, kind and onset; only the noise and the shifts differ


def test_bursty_errors_are_far_more_dispersed() -> None:
    def dispersion(rec: dict) -> float:  # var/mean of the baseline's errors around its mean error ratio
        req, err = arr(rec, "requests", "baseline"), arr(rec, "errors", "baseline")
        resid = err - req * np.nansum(err) / max(np.nansum(req), 1)
        return np.nanvar(resid) / max(np.nanmean(err), 1e-9)

    busy = [i for i, r in enumerate(recordings(())) if np.nanmean(arr(r, "errors", "baseline")) > 5]
    assert len(busy) >= 3
    plain, bursty = recordings(()), recordings(("bursty",))
    assert all(dispersion(bursty[i]) > 2 * dispersion(plain[i]) for i in busy)
    bursts = heldout.error_bursts(100_000, np.random.default_rng(SEED))
    assert set(np.unique(bursts)) == {1.0, 5.0} and 0.03 < np.mean(bursts == 5) < 0.05  # 2% starts × 2 ticks


def test_outage_hits_both_arms_in_the_same_ticks() -> None:
    checked = 0
    for rec in recordings(("outage",)):
        o, labels = rec["labels"]["shift_detail"]["outage"], rec["labels"]
        assert 6 <= o["ticks"] <= 30 and 20 <= o["error_x"] <= 100 and 3 <= o["p99_x"] <= 10
        n = len(rec["series"]["requests"]["canary"])
        inside = np.zeros(n, bool)
        inside[o["start_tick"]:o["start_tick"] + o["ticks"]] = True
        after_warmup = np.arange(n) >= labels["warmup_ticks"]
        for arm in ARMS:
            p99 = arr(rec, "p99_seconds", arm)
            typical = np.nanmedian(p99[~inside])
            assert np.all(p99[inside & ~np.isnan(p99)] > 2 * typical)
            assert np.all(p99[~inside & after_warmup & ~np.isnan(p99)] < 1.5 * typical)
            req, err = arr(rec, "requests", arm), arr(rec, "errors", arm)
            if np.nansum(req[inside]) * labels["base_error_rate"] * 20 >= 10:  # enough requests to see it
                checked += 1
                assert np.nansum(err[inside]) / np.nansum(req[inside]) > \
                    10 * np.nansum(err[~inside]) / np.nansum(req[~inside])
    assert checked >= 4


def test_surge_multiplies_both_arms_traffic_in_the_same_ticks() -> None:
    for rec in recordings(("surge",)):
        s = rec["labels"]["shift_detail"]["surge"]
        assert 10 <= s["ticks"] <= 60 and 3 <= s["traffic_x"] <= 8
        n = len(rec["series"]["requests"]["canary"])
        inside = np.zeros(n, bool)
        inside[s["start_tick"]:s["start_tick"] + s["ticks"]] = True
        for arm in ARMS:
            req = arr(rec, "requests", arm)
            if np.nanmean(req[~inside]) < 20:
                continue  # too few requests a tick to measure the ratio
            assert 0.7 < np.nanmean(req[inside]) / np.nanmean(req[~inside]) / s["traffic_x"] < 1.4
        p99 = arr(rec, "p99_seconds", "baseline")
        assert 1.3 < np.nanmedian(p99[inside]) / np.nanmedian(p99[~inside]) < 1.7


def test_flaky_canary_misses_a_quarter_of_its_scrapes() -> None:
    recs = recordings(("flaky",))
    missing = {arm: np.concatenate([np.isnan(arr(r, "requests", arm)) for r in recs]) for arm in ARMS}
    assert 0.22 < missing["canary"].mean() < 0.28 and missing["baseline"].mean() < 0.04
    for rec in recs:  # a failed scrape loses every signal of its tick
        gone = [np.isnan(arr(rec, s, "canary")) for s in ("requests", "errors", "slow", "cpu_seconds", "memory_bytes")]
        assert all(np.array_equal(g, gone[0]) for g in gone)


def test_low_traffic_is_between_0_2_and_1_request_a_second() -> None:
    recs = recordings(("low",))
    rps = [r["labels"]["rps"] for r in recs]
    assert all(0.2 <= x <= 1.0 for x in rps) and len(set(rps)) == len(rps)
    for rec in recs:
        total = arr(rec, "requests", "canary") + arr(rec, "requests", "baseline")
        assert np.nanmean(total) / heldout.STEP < 1.5 * 1.3  # rps × U(0.7, 1.3) × the wave


def test_window_adds_the_pre_rollout_counts_and_changes_no_series(tmp_path: Path) -> None:
    heldout.generate(tmp_path / "plain", SEED, 12, novel=False)
    heldout.generate(tmp_path / "window", SEED, 12, novel=False, window=True)
    for plain, windowed in zip(sorted((tmp_path / "plain").iterdir()), sorted((tmp_path / "window").iterdir()),
                               strict=True):
        a, b = json.loads(plain.read_text()), json.loads(windowed.read_text())
        assert a["series"] == b["series"] and "models" not in a
        before = b["models"]["#before"]
        start, end = before["window"]
        assert end - start == heldout.WINDOW_TICKS * heldout.STEP and before["missing"] == {}
        assert 0 <= before["before"]["errors"] <= before["before"]["requests"]
        # about 60 ticks of the service's whole traffic (both arms were the previous version then)
        per_tick = np.nansum(arr(b, "requests", "canary")) + np.nansum(arr(b, "requests", "baseline"))
        per_tick /= len(b["series"]["requests"]["canary"])
        expected = heldout.WINDOW_TICKS * per_tick
        assert 0.3 * expected <= before["before"]["requests"] <= 3 * expected + 50
