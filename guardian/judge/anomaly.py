"""Streaming, causal anomaly detection for one metric series (the `guardian detect` baseline).

v2 experiment scaffold.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

from guardian.judge.cusum import Cusum


class RollingWindow:
    """The last `size` values, kept both in arrival order and sorted: O(log n) quantiles and medians."""

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
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def quantile(self, q: float) -> float:
        s = self._sorted
        pos = q * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _median(xs) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


@dataclass(frozen=True)
class Params:
    window: int = 1000
    short: int = 6
    min_history: int = 150
    tail: float = 0.0025
    band: float = 0.05
    spike_z: float = 2.0
    shift_z: float = 1.0
    seasonal_z: float = 3.0
    seasonal_gate: float = 0.5
    seasonal_explain: bool = False
    jitter: int = 2
    suppress: int = 300
    escalate: float = 0.0
    scale_floor: float = 0.05
    cusum_k: float = 0.5
    cusum_h: float = 0.0
    cusum_clip: float = 3.0
    threshold: float = 0.5


class AnomalyDetector:
    def __init__(self, params: Params | None = None) -> None:
        self.p = p = params or Params()
        self.ref = RollingWindow(p.window)
        self.recent: deque[float] = deque()
        self.n = 0
        self.last_alarm = -(10**9)
        self.last_z = 0.0
        self.times: deque[float] = deque(maxlen=20)
        self.period: int | None = None
        self.history: deque[float] = deque()
        self.eref = RollingWindow(p.window)
        self.erecent: deque[float] = deque(maxlen=p.short)
        self.cusum = Cusum(p.cusum_k, p.cusum_h) if p.cusum_h > 0 else None
        self.why = ""

    def _scale(self, w: RollingWindow) -> float:
        iqr = (w.quantile(0.75) - w.quantile(0.25)) / 1.349
        spread = w.quantile(1 - self.p.tail) - w.quantile(self.p.tail)
        return max(iqr, self.p.scale_floor * spread, 1e-9 * (1 + abs(w.quantile(0.5))))

    def update(self, timestamp: float, value: float) -> tuple[float, bool]:
        p = self.p
        self.n += 1
        self.times.append(timestamp)
        if self.period is None and len(self.times) == self.times.maxlen:
            ts = list(self.times)
            step = _median([b - a for a, b in zip(ts, ts[1:], strict=False)])
            per = round(86400 / step) if step > 0 else 0
            self.period = per if 4 * p.jitter < per <= 2000 else 0
        zs = {}
        ready = len(self.ref) >= p.min_history
        if ready:
            s = self._scale(self.ref)
            lo, hi = self.ref.quantile(p.tail), self.ref.quantile(1 - p.tail)
            zs["spike"] = max(value - hi, lo - value) / s / p.spike_z
            if len(self.recent) >= p.short - 1:
                short = _median([*list(self.recent)[-(p.short - 1):], value])
                blo, bhi = self.ref.quantile(p.band), self.ref.quantile(1 - p.band)
                zs["shift"] = max(short - bhi, blo - short) / s / p.shift_z
            if self.cusum is not None:
                r = (value - self.ref.quantile(0.5)) / s
                r = max(-p.cusum_clip, min(p.cusum_clip, r))
                zs["cusum"] = self.cusum.update(r) / p.cusum_h
        # seasonal
        if self.period:
            P, J = self.period, p.jitter
            self.history.append(value)
            need = 3 * P + J + 1
            if len(self.history) > need:
                self.history.popleft()
            if len(self.history) == need:
                h = self.history
                meds = [sorted((h[-1 - P + j], h[-1 - 2 * P + j], h[-1 - 3 * P + j]))[1] for j in range(-J, J + 1)]
                pred = meds[J]
                e = value - pred
                if ready:
                    if p.seasonal_explain and "spike" in zs:
                        his = sorted(max(h[-1 - k * P + j] for j in range(-J, J + 1)) for k in (1, 2, 3))
                        los = sorted(min(h[-1 - k * P + j] for j in range(-J, J + 1)) for k in (1, 2, 3))
                        band_e = max(value - his[1], los[1] - value, 0.0)
                        zs["spike"] = min(zs["spike"], band_e / s / p.spike_z)
                    if len(self.eref) >= p.min_history:
                        se = self._scale(self.eref)
                        if se < p.seasonal_gate * s and len(self.erecent) == p.short:
                            es = _median([*list(self.erecent)[1:], e])
                            elo, ehi = self.eref.quantile(p.band), self.eref.quantile(1 - p.band)
                            zs["seasonal"] = max(es - ehi, elo - es) / se / p.seasonal_z
                self.eref.push(e)
                self.erecent.append(e)
        self.ref.push(value)
        self.recent.append(value)
        if len(self.recent) > p.short:
            self.recent.popleft()
        z = max([0.0, *zs.values()])
        score = 1.0 - 0.5 ** z
        quiet = self.n - self.last_alarm > p.suppress
        alarm = score >= p.threshold and (quiet or (p.escalate > 0 and z > p.escalate * self.last_z))
        self.last_z = max(self.last_z * (1 if not quiet else 0), z) if not quiet else self.last_z
        if alarm:
            self.last_alarm = self.n
            self.last_z = z
            self.why = max(zs, key=zs.get)
            if self.cusum is not None:
                self.cusum.reset()
        return score, alarm
