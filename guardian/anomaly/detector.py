"""Streaming, causal anomaly detection for one metric series (what `guardian detect` runs). Pure: no I/O.

`AnomalyDetector.update(timestamp, value) -> (score, alarm)` sees one row at a time and keeps only
bounded state, so row i's output depends on rows <= i alone. Three pieces of evidence, each measured
in robust units of the series' own spread, are combined into one score:

- **spike** -- the value lies beyond the 0.25% / 99.75% quantiles of the trailing `window` rows.
  Quantiles rather than mean ± kσ because real metrics are skewed and spiky: a value must be more
  extreme than (nearly) everything seen lately, by `spike_z` robust σ. After a level change the
  tails catch up within a handful of rows, so one change gives one alarm, not hundreds.
- **shift** -- the median of the last `short` rows lies beyond the 5% / 95% quantiles by `shift_z`
  σ: a sustained shift too small to be a spike (the median ignores a lone outlier, so this is the
  persistence requirement: about short/2 rows must agree).
- **seasonal** -- with a daily period of P rows (from the sampling step), the residual against the
  median of the same time 1, 2 and 3 days earlier, watched the same way as `shift` but against the
  residual's own spread. Used only while the residuals are much tighter than the series itself
  (`seasonal_gate`), i.e. where the daily pattern really predicts; and an event seen at this time
  of day (± `jitter` rows) on at least two of the three previous days does not count as a spike.

σ is IQR/1.349 of the trailing window, floored at `scale_floor` × its 0.25-99.75% range, so that
near-constant series with rare bursts do not turn every wiggle into infinite z.

Combining: z = max over the pieces of (excess / its threshold), score = 1 - 2^-z in [0, 1), so z = 1
is score 0.5. The production alarm is score >= `threshold` (0.5), not during the first `min_history`
rows (too little history to know the tails), and at most once per `suppress` rows: an incident is
reported at its start, and the follow-up detections of the same incident -- each a false positive
costing 0.11 in NAB, a duplicate page in production -- are held back. Measured on NAB (four
folders, standard profile, fixed threshold): see benchmarks/nab_score.py.
"""
from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

DAY_SECONDS = 86400.0
MAX_PERIOD_ROWS = 10_000      # daily seasonality is looked for up to 1 row / ~9 s


class RollingWindow:
    """The last `size` values, kept in arrival order and sorted: any quantile in O(1), an update in
    O(log n) comparisons plus one memmove -- cheap at these window sizes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def push(self, x: float) -> None:
        self._fifo.append(x)
        insort(self._sorted, x)
        if len(self._fifo) > self.size:
            del self._sorted[bisect_left(self._sorted, self._fifo.popleft())]

    def quantile(self, q: float) -> float:
        """Linear-interpolated quantile (numpy's default method) of the values in the window."""
        s = self._sorted
        pos = q * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def scale(self, tail: float, floor: float) -> float:
        """Robust σ: IQR/1.349, floored at `floor` × the tail-to-tail range (and a tiny absolute floor)."""
        iqr = (self.quantile(0.75) - self.quantile(0.25)) / 1.349
        spread = self.quantile(1 - tail) - self.quantile(tail)
        return max(iqr, floor * spread, 1e-9 * (1.0 + abs(self.quantile(0.5))))


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _outside(x: float, lo: float, hi: float) -> float:
    """How far x lies outside [lo, hi] (negative inside)."""
    return max(x - hi, lo - x)


@dataclass(frozen=True)
class Params:
    """Detector parameters; rows, not seconds, except where said. Defaults are the production setting."""

    window: int = 2000          # trailing rows for quantiles and σ (a week at 5-minute samples)
    min_history: int = 400      # no alarm before this many rows (1/tail: the tails must mean something)
    tail: float = 0.0025        # spike reference quantiles: tail and 1 - tail
    spike_z: float = 1.5        # a spike must pass the tail quantile by this many σ
    short: int = 6              # rows in the short median (shift and seasonal)
    band: float = 0.05          # shift reference quantiles: band and 1 - band
    shift_z: float = 0.75       # the short median must pass the band quantile by this many σ
    seasonal_z: float = 3.0     # the same, for the seasonal residual, in the residual's σ
    seasonal_gate: float = 0.5  # use the seasonal view only while residual σ < gate × series σ
    jitter: int = 2             # rows of slack when matching the same time on earlier days
    scale_floor: float = 0.05   # σ >= this × the tail-to-tail range of the window
    suppress: int = 100         # after an alarm, no new alarm for this many rows
    threshold: float = 0.5      # production alarm: score >= threshold (0.5 is z = 1)

    def __post_init__(self) -> None:
        ints = ("window", "min_history", "short", "jitter", "suppress")
        if any(not isinstance(getattr(self, f), int) or getattr(self, f) < 0 for f in ints):
            raise ValueError(f"{', '.join(ints)} must be non-negative integers")
        if self.window < 10 or self.short < 1:
            raise ValueError("window must be >= 10 rows and short >= 1")
        if not (0 <= self.tail < 0.5 and 0 <= self.band < 0.5):
            raise ValueError("tail and band must be in [0, 0.5)")
        if min(self.spike_z, self.shift_z, self.seasonal_z, self.seasonal_gate) <= 0 or self.scale_floor < 0:
            raise ValueError("spike_z, shift_z, seasonal_z and seasonal_gate must be > 0, scale_floor >= 0")
        if not 0 < self.threshold < 1:
            raise ValueError("threshold must be in (0, 1)")


class _Ring:
    """Fixed-size history with O(1) access `ago(k)` = the value k rows before the newest (ago(0))."""

    def __init__(self, size: int) -> None:
        self.buf = [0.0] * size
        self.count = 0

    def push(self, x: float) -> None:
        self.buf[self.count % len(self.buf)] = x
        self.count += 1

    def full(self) -> bool:
        return self.count >= len(self.buf)

    def ago(self, k: int) -> float:
        return self.buf[(self.count - 1 - k) % len(self.buf)]


class AnomalyDetector:
    """One series, one row at a time. See the module docstring for the method and its reasons."""

    def __init__(self, params: Params | None = None) -> None:
        self.p = p = params or Params()
        self.rows = 0
        self.ref = RollingWindow(p.window)             # trailing values, the current row excluded
        self.recent: deque[float] = deque(maxlen=p.short)
        self._stamps: list[float] = []
        self.period: int | None = None                 # rows per day; 0 = no usable daily period
        self._history: _Ring | None = None
        self.residuals = RollingWindow(p.window)       # trailing seasonal residuals
        self.recent_residuals: deque[float] = deque(maxlen=p.short)
        self.last_alarm: int | None = None
        self.evidence: dict[str, float] = {}           # the last row's z per piece (for explanations)

    def update(self, timestamp: float, value: float) -> tuple[float, bool]:
        """Feed the next row; returns (score in [0, 1), production alarm)."""
        if not math.isfinite(value):
            raise ValueError(f"value must be a finite number, got {value!r}")
        p = self.p
        self.rows += 1
        self._learn_period(timestamp)
        self.recent.append(value)
        z: dict[str, float] = {}
        sigma = None                                   # None: still warming up, no evidence yet
        if len(self.ref) >= p.min_history:
            sigma = self.ref.scale(p.tail, p.scale_floor)
            tails = self.ref.quantile(p.tail), self.ref.quantile(1 - p.tail)
            z["spike"] = _outside(value, *tails) / sigma / p.spike_z
            if len(self.recent) == p.short:
                band = self.ref.quantile(p.band), self.ref.quantile(1 - p.band)
                z["shift"] = _outside(_median(list(self.recent)), *band) / sigma / p.shift_z
        self._seasonal(value, sigma, z)
        self.ref.push(value)
        self.evidence = z
        strength = max(0.0, *z.values()) if z else 0.0
        score = 1.0 - 2.0 ** -strength
        quiet = self.last_alarm is None or self.rows - self.last_alarm > p.suppress
        alarm = score >= p.threshold and quiet
        if alarm:
            self.last_alarm = self.rows
        return score, alarm

    def _learn_period(self, timestamp: float) -> None:
        """Rows per day from the median step of the first 20 rows (irregular exports are common)."""
        if self.period is not None:
            return
        self._stamps.append(timestamp)
        if len(self._stamps) < 20:
            return
        step = _median([b - a for a, b in zip(self._stamps, self._stamps[1:], strict=False)])
        rows = round(DAY_SECONDS / step) if step > 0 else 0
        self.period = rows if 4 * self.p.jitter < rows <= MAX_PERIOD_ROWS else 0
        if self.period:
            self._history = _Ring(3 * self.period + self.p.jitter + 1)
        self._stamps = []

    def _seasonal(self, value: float, sigma: float | None, z: dict[str, float]) -> None:
        """Same time on the three previous days: explains recurring spikes, and watches the residual."""
        h = self._history
        if h is None:
            return
        h.push(value)
        if not h.full():
            return
        P, J, p = self.period or 0, self.p.jitter, self.p
        residual = value - _median([h.ago(P), h.ago(2 * P), h.ago(3 * P)])
        self.recent_residuals.append(residual)
        if sigma is not None:
            if z.get("spike", 0.0) > 0:
                # seen at this time of day (± jitter) on at least two of the three previous days?
                highs = sorted(max(h.ago(k * P + j) for j in range(-J, J + 1)) for k in (1, 2, 3))
                lows = sorted(min(h.ago(k * P + j) for j in range(-J, J + 1)) for k in (1, 2, 3))
                z["spike"] = min(z["spike"], max(_outside(value, lows[1], highs[1]), 0.0) / sigma / p.spike_z)
            if len(self.residuals) >= p.min_history and len(self.recent_residuals) == p.short:
                rsigma = self.residuals.scale(p.tail, p.scale_floor)
                if rsigma < p.seasonal_gate * sigma:
                    short = _median(list(self.recent_residuals))
                    lo, hi = self.residuals.quantile(p.band), self.residuals.quantile(1 - p.band)
                    z["seasonal"] = _outside(short, lo, hi) / rsigma / p.seasonal_z
        self.residuals.push(residual)
