"""The streaming check on a seasonal forecast: standardized residuals, a persistence rule ("`consecutive`
periods beyond k·σ") and an optional one-sided CUSUM for small sustained shifts. Pure; one sample at a
time. `judge/forecast.py` runs it period by period for `kind: baseline` checks; the model itself is
`guardian.forecast.model.SeasonalModel`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from guardian.forecast.model import SeasonalModel, iso_utc
from guardian.judge.cusum import Cusum


@dataclass(frozen=True)
class Observation:
    """Everything `ForecastMonitor.observe` knows about one sample."""

    t: float
    value: float | None
    centre: float
    sigma: float
    z: float  # NaN when the value is missing
    beyond: bool  # this sample is beyond k·σ (in the watched direction)
    run_length: int  # consecutive samples beyond k·σ on the same side, ending here
    breached: bool  # run_length >= consecutive
    learning: bool  # t < frozen_at: used to recalibrate, never counted as a breach
    cusum_upper: float = 0.0
    cusum_lower: float = 0.0
    cusum_alarm: bool = False


class ForecastMonitor:
    """The streaming "k consecutive periods beyond the kσ forecast" check. Pure; one sample at a time.

    `update(t, value) -> (z, breached, run_length)` with z = (value − centre − offset) / σ.

    Frozen at `frozen_at` (the rollout's start; default the model's `fitted_at`): samples before it
    are *learning* — with `recalibrate` = n > 0 the median residual of the last n of them becomes a
    level `offset` (the level may have drifted since the model was fitted), and σ is widened by
    √(1 + π/2m) for the uncertainty of that median of m residuals; they never count as breaches.
    From `frozen_at` on nothing is learned any more: offset, σ and the model stay as they were, so
    a regression that starts with the rollout is never absorbed. A model fitted after `frozen_at`
    is refused (it may have seen the rollout).

    `direction`: "above" (e.g. traffic above forecast -> scale out), "below" or "both" (a run
    counts consecutive samples beyond k·σ on the same side). A missing value (None/NaN) gives
    z = NaN and leaves the run and the CUSUM as they are. With `cusum_h` set, one-sided CUSUMs
    (k = `cusum_k`, h = `cusum_h`, z clipped at `cusum_clip`) run on z in the watched direction(s);
    `last.cusum_alarm` reports them (they do not change `breached`); a CUSUM that alarmed starts again from 0
    (a watch that scaled on it is not told again and again while S drains; a shift that goes on alarms again).
    `min_change` (a share of the forecast, default 0) is a practical floor: a sample counts as beyond only if
    it is also that far from the centre, and the CUSUMs accumulate the residual beyond centre ± the floor.
    """

    def __init__(
        self,
        model: SeasonalModel,
        k: float = 3.0,
        consecutive: int = 3,
        frozen_at: float | None = None,
        *,
        direction: Literal["above", "below", "both"] = "both",
        recalibrate: int = 12,
        cusum_k: float = 0.5,
        cusum_h: float | None = 5.0,
        cusum_clip: float | None = 2.5,
        min_change: float = 0.0,
    ) -> None:
        if k <= 0 or consecutive < 1:
            raise ValueError("k must be > 0 and consecutive >= 1")
        if min_change < 0:
            raise ValueError("min_change must be >= 0")
        if direction not in ("above", "below", "both"):
            raise ValueError(f"direction must be above, below or both, got {direction!r}")
        frozen_at = model.fitted_at if frozen_at is None else float(frozen_at)
        if model.fitted_at > frozen_at:
            raise ValueError(
                f"the model was fitted up to {iso_utc(model.fitted_at)}, after the freeze at {iso_utc(frozen_at)}: "
                "it may have learned from the rollout; fit it with history ending at the rollout's start"
            )
        self.model, self.k, self.consecutive, self.frozen_at = model, k, consecutive, frozen_at
        self.direction, self.min_change = direction, float(min_change)
        self._learned: deque[float] = deque(maxlen=max(recalibrate, 0) or None)
        self.recalibrate = max(recalibrate, 0)
        self.run_length, self._run_sign = 0, 0
        self.upper = Cusum(cusum_k, cusum_h, cusum_clip) if cusum_h and direction != "below" else None
        self.lower = Cusum(cusum_k, cusum_h, cusum_clip) if cusum_h and direction != "above" else None
        self.last: Observation | None = None

    @property
    def offset(self) -> float:
        """The level correction learned before the freeze (0 until at least 3 residuals were seen)."""
        if not self.recalibrate or len(self._learned) < 3:
            return 0.0
        return float(np.median(np.fromiter(self._learned, float)))

    @property
    def inflation(self) -> float:
        m = len(self._learned) if self.recalibrate else 0
        return math.sqrt(1 + math.pi / (2 * m)) if m >= 3 else 1.0

    @property
    def cusum_alarm(self) -> bool:
        return bool((self.upper and self.upper.alarm) or (self.lower and self.lower.alarm))

    def update(self, t: float, value: float | None) -> tuple[float, bool, int]:
        obs = self.observe(t, value)
        return obs.z, obs.breached, obs.run_length

    def observe(self, t: float, value: float | None) -> Observation:
        """Like `update`, with everything the monitor knows about the sample."""
        t = float(t)
        x = math.nan if value is None else float(value)
        missing = not math.isfinite(x)
        centre, sigma = self.model.forecast(t)
        if t < self.frozen_at and not missing and self.recalibrate:  # before the rollout: learn the level
            self._learned.append(x - centre)
        centre += self.offset
        sigma *= self.inflation
        z = math.nan if missing else (x - centre) / sigma
        if t < self.frozen_at:  # learning samples are reported, never counted
            obs = Observation(t, None if missing else x, centre, sigma, z, False, 0, False, True)
            self.last = obs
            return obs

        beyond = False
        if not missing:
            margin = self.min_change * abs(centre)  # the practical floor: beyond it as well as beyond k·σ
            sign = 1 if z > self.k and x - centre > margin else -1 if z < -self.k and centre - x > margin else 0
            if (self.direction == "above" and sign < 0) or (self.direction == "below" and sign > 0):
                sign = 0
            beyond = sign != 0
            self.run_length = (self.run_length + 1 if sign == self._run_sign else 1) if beyond else 0
            self._run_sign = sign
            if self.upper:  # with a floor, the CUSUMs accumulate the residual beyond it
                self.upper.update((x - centre - margin) / sigma if margin else z)
            if self.lower:
                self.lower.update((centre - margin - x) / sigma if margin else -z)
        obs = Observation(
            t=t,
            value=None if missing else x,
            centre=centre,
            sigma=sigma,
            z=z,
            beyond=beyond,
            run_length=self.run_length,
            breached=self.run_length >= self.consecutive,
            learning=False,
            cusum_upper=self.upper.statistic if self.upper else 0.0,
            cusum_lower=self.lower.statistic if self.lower else 0.0,
            cusum_alarm=self.cusum_alarm,
        )
        if obs.cusum_alarm:  # said once per crossing, then started again: a shift that goes on crosses again
            for side in (self.upper, self.lower):
                if side is not None:
                    side.reset()
        self.last = obs
        return obs
