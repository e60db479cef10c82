"""benchmarks/heldout.py's generator: every kind gives a valid recording labelled like the bench's."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np

from guardian.sources.recording import load_recording

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
heldout = importlib.import_module("heldout")

BENCH_LABELS = {"truth", "kind", "onset_tick", "rps", "canary_share", "base_error_rate", "warmup_ticks"}


def test_every_kind_is_a_valid_recording_with_the_bench_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i, kind in enumerate(heldout.kind_weights(novel=True)):
        path = tmp_path / f"{kind}.json"
        path.write_text(json.dumps(heldout.make_recording(rng, i, kind)))
        rec = load_recording(path)
        labels, canary = rec["labels"], rec["series"]["requests"]["canary"]
        assert set(labels) == BENCH_LABELS and labels["kind"] == kind
        assert labels["truth"] == {"healthy": "good", "silent": "no_traffic"}.get(kind, "bad")
        if labels["truth"] == "bad":
            assert 0 <= labels["onset_tick"] < len(canary) // 3
        else:
            assert labels["onset_tick"] is None
        if kind == "silent":
            assert set(canary) <= {0, None}


def test_the_seed_decides_the_set(tmp_path: Path) -> None:
    for name in ("a", "b"):
        heldout.generate(tmp_path / name, 3, 4, novel=False)
    assert [f.read_text() for f in sorted((tmp_path / "a").iterdir())] == \
        [f.read_text() for f in sorted((tmp_path / "b").iterdir())]
