"""Forecast model files, and where a rollout's models come from, frozen when it starts (`kind: baseline`).

`write_model(model, "models")` writes `models/<service>/<signal>.json` atomically (what `guardian baseline
fit` does); `read_model(path)` loads one.

`ModelDirectory(root).freeze(service, ruleset, at)` reads, for every `kind: baseline` check, the
model the check names (`model:`, relative to its rule file) or `<root>/<service>/<signal>.json`,
and returns {check name: the model's JSON document, or why there is none}. The guard stores that
snapshot with the rollout, so a model refitted mid-rollout — or a guardian restart — never changes
what the rollout is judged against, and recordings carry it for replay (`RecordedModels`).

A gating check (rollback / pause) without a usable model refuses the rollout's start (ModelMissing,
naming the file and the command that writes it); an optional or advisory (scale / notify) one
abstains, visibly, with the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from guardian.domain import BAKE_REFERENCE_KEY, BEFORE_ROLLOUT_KEY
from guardian.errors import ModelFormatError, ModelMissing
from guardian.files import atomic_write
from guardian.forecast.model import SeasonalModel
from guardian.rules.loader import RuleSet
from guardian.rules.models import ADVISORY_ACTIONS, ForecastCheck


# -- model files --------------------------------------------------------------------------------------
def _safe_part(name: str, what: str) -> str:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"{what} {name!r} cannot be used as a file name")
    return name


def model_path(models_dir: str | Path, service: str, signal: str) -> Path:
    """Where the model of one signal of one service lives: `<models_dir>/<service>/<signal>.json`."""
    return Path(models_dir) / _safe_part(service, "service") / f"{_safe_part(signal, 'signal')}.json"


def write_model(model: SeasonalModel, models_dir: str | Path) -> Path:
    """Write `models/<service>/<signal>.json` atomically (`atomic_write`): a reader sees the old model or
    the new one, never half a file; the file gets the umask's usual mode."""
    path = model_path(models_dir, model.service, model.signal)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, model.to_json() + "\n")
    return path


def read_model(path: str | Path) -> SeasonalModel:
    """Load a model file (ModelFormatError if it is not guardian-baseline/v1)."""
    return SeasonalModel.from_json(Path(path).read_text(encoding="utf-8"))


# -- the models a rollout is judged against ------------------------------------------------------------
class ModelLoader(Protocol):
    def freeze(self, service: str, ruleset: RuleSet, at: float) -> dict[str, dict[str, Any] | str]: ...


def forecast_checks(ruleset: RuleSet) -> list[ForecastCheck]:
    return [c for c in ruleset.rules.checks if isinstance(c, ForecastCheck)]


class ModelDirectory:
    def __init__(self, root: str | Path = "models"):
        self.root = Path(root)

    def path_for(self, service: str, check: ForecastCheck, ruleset: RuleSet) -> Path:
        if check.model:
            p = Path(check.model)
            rule_file = Path(ruleset.source)
            return p if p.is_absolute() or not rule_file.is_file() else rule_file.parent / p
        return self.root / service / f"{check.signal}.json"

    def freeze(self, service: str, ruleset: RuleSet, at: float) -> dict[str, dict[str, Any] | str]:
        out: dict[str, dict[str, Any] | str] = {}
        for check in forecast_checks(ruleset):
            path = self.path_for(service, check, ruleset)
            try:
                model = SeasonalModel.from_json(path.read_text(encoding="utf-8"))
                if model.fitted_at > at:
                    raise ModelFormatError(f"it was fitted up to {model.to_dict()['fitted_at']}, after the "
                                           "rollout's start; it may have seen the release")
                out[check.name] = model.to_dict()
            except FileNotFoundError:
                why = (f"no model at {path}: write it with `guardian baseline fit {service} "
                       f"--signal {check.signal}`")
                out[check.name] = _or_refuse(check, why)
            except (OSError, UnicodeDecodeError, ModelFormatError) as e:
                out[check.name] = _or_refuse(check, f"model {path} is unusable: {e}")
        return out


class RecordedModels:
    """The snapshot a recording carries (its `models` key); checks it lacks abstain or refuse."""

    def __init__(self, models: dict[str, Any] | None):
        self.models = models or {}

    def freeze(self, service: str, ruleset: RuleSet, at: float) -> dict[str, dict[str, Any] | str]:
        out: dict[str, dict[str, Any] | str] = {}
        for check in forecast_checks(ruleset):
            got = self.models.get(check.name)
            out[check.name] = got if got is not None else _or_refuse(check, "the recording carries no model")
        for key in (BAKE_REFERENCE_KEY, BEFORE_ROLLOUT_KEY):  # the service before the rollout (bake, level test)
            if isinstance(self.models.get(key), dict):
                out[key] = self.models[key]
        return out


def _or_refuse(check: ForecastCheck, why: str) -> str:
    if check.optional or check.action in ADVISORY_ACTIONS:
        return why
    raise ModelMissing(f"check {check.name!r} (kind: baseline, action: {check.action}): {why}")


def thaw(snapshot: dict[str, Any]) -> dict[str, SeasonalModel | str]:
    """A stored snapshot as the judge wants it: SeasonalModel objects (or the reason there is none)."""
    out: dict[str, SeasonalModel | str] = {}
    for name, doc in snapshot.items():
        if isinstance(doc, dict):
            try:
                out[name] = SeasonalModel.from_json(doc)
            except ModelFormatError as e:
                out[name] = f"stored model unusable: {e}"
        else:
            out[name] = str(doc)
    return out
