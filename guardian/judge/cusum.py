"""One-sided CUSUM on standardized residuals, for small sustained shifts (pure, no I/O).

    S_0 = 0,   S_t = max(0, S_{t-1} + min(z_t, clip) - k),   alarm while S_t >= h

With k = 0.5 (half the shift to detect, in σ) and h = 4-5 the average run length to detect a 1σ
shift is about 8-10 samples, against about 44 for a Shewhart 3σ chart (one point beyond 3σ); in
control (no shift) it is about 170 (h = 4) or 470 (h = 5) samples per side (the project's STATS.md, outside
this repository: "Methods that hold up", CUSUM).

`clip` (optional) winsorizes each z before it is added, so one huge spike cannot raise the alarm on
its own: with clip = 2.5, k = 0.5 and h = 5 each sample adds at most 2, so at least three large
residuals in a row are needed (the same persistence the 3σ rule asks for), while a 1σ shift is
slowed only slightly (E[min(z, 2.5)] = 0.97 for z ~ N(1, 1)).

For the lower side feed -z. A missing z (None or NaN) changes nothing.
"""
from __future__ import annotations

import math


class Cusum:
    """Upper one-sided CUSUM. `update(z) -> (statistic, alarm)`."""

    def __init__(self, k: float = 0.5, h: float = 5.0, clip: float | None = None) -> None:
        if k < 0 or h <= 0:
            raise ValueError(f"CUSUM needs k >= 0 and h > 0, got k={k}, h={h}")
        if clip is not None and clip <= k:
            raise ValueError(f"CUSUM clip ({clip}) must be above k ({k}), or every sample would pull S down")
        self.k, self.h, self.clip = k, h, clip
        self.reset()

    def reset(self) -> None:
        self.statistic = 0.0
        self.since = 0  # samples since S was last 0: the change started about this many samples ago
        self.samples = 0

    @property
    def alarm(self) -> bool:
        return self.statistic >= self.h

    def update(self, z: float | None) -> tuple[float, bool]:
        if z is None or not math.isfinite(z):
            return self.statistic, self.alarm
        self.samples += 1
        if self.clip is not None:
            z = min(z, self.clip)
        self.statistic = max(0.0, self.statistic + z - self.k)
        self.since = self.since + 1 if self.statistic > 0 else 0
        return self.statistic, self.alarm

    def __repr__(self) -> str:
        return f"Cusum(k={self.k}, h={self.h}, clip={self.clip}, S={self.statistic:.3g})"
