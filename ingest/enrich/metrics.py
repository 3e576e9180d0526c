"""Streaming metric anomaly scores: robust to noise and missing samples, bounded state per series.

Each series (entity, metric) keeps an exponentially weighted mean and mean absolute deviation. The sample
is scored against the state *before* it is learned, and what is learned is winsorised (clipped to a few
deviations) so that one burst does not drag the baseline along with it and hide the rest of the incident.
NaN or null samples are counted as missing and do not touch the state. The number of series is bounded
(least recently updated series are forgotten first), so an unbounded label cardinality cannot exhaust memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricScorerConfig:
    """Tuning of the streaming scorer."""

    #: Weight of a new sample in the running mean/deviation (about a 1/alpha sample memory).
    alpha: float = 0.05
    #: Samples a series needs before its scores count.
    warmup: int = 10
    #: Learned samples are clipped to mean +- clip * deviation.
    clip: float = 4.0
    #: Deviation floor, relative to the mean's magnitude, so flat series do not give infinite scores.
    relative_floor: float = 0.02
    absolute_floor: float = 1e-6
    #: Scores saturate here. A series that sat at zero divides its first jump by the absolute floor (a score
    #: of millions); such a score says no more than this one does, and it would swamp every comparison of
    #: scores across series (rankings, features, baselines).
    max_score: float = 50.0
    max_series: int = 200_000


@dataclass
class _SeriesState:
    mean: float
    dev: float
    count: int = 1
    missing: int = 0


@dataclass(frozen=True)
class MetricScore:
    """The score of one sample: ``z`` is signed (above or below the baseline), ``score`` its magnitude."""

    z: float
    score: float
    baseline: float
    warm: bool


class MetricAnomalyScorer:
    """Scores samples per series as they stream in."""

    def __init__(self, config: MetricScorerConfig | None = None) -> None:
        self.config = config or MetricScorerConfig()
        self._series: OrderedDict[tuple[str, str], _SeriesState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._series)

    def score(self, series: tuple[str, str], value: float | None) -> MetricScore | None:
        """Score ``value`` against the series' baseline, then learn it. ``None`` for a missing sample."""
        cfg = self.config
        state = self._series.get(series)
        if value is None or math.isnan(value):
            if state is not None:
                state.missing += 1
            return None
        if state is None:
            self._series[series] = _SeriesState(mean=value, dev=0.0)
            self._evict()
            return MetricScore(0.0, 0.0, value, warm=False)
        self._series.move_to_end(series)
        scale = max(state.dev, abs(state.mean) * cfg.relative_floor, cfg.absolute_floor)
        z = max(-cfg.max_score, min(cfg.max_score, (value - state.mean) / scale))
        warm = state.count >= cfg.warmup
        # Learn a clipped copy so a burst cannot become the new normal within a few samples.
        learned = state.mean + max(-cfg.clip, min(cfg.clip, z)) * scale if warm else value
        state.dev = (1 - cfg.alpha) * state.dev + cfg.alpha * abs(learned - state.mean) if warm else (
            (state.dev * (state.count - 1) + abs(value - state.mean)) / state.count
        )
        state.mean = (1 - cfg.alpha) * state.mean + cfg.alpha * learned if warm else (
            state.mean + (value - state.mean) / (state.count + 1)
        )
        state.count += 1
        return MetricScore(z if warm else 0.0, abs(z) if warm else 0.0, state.mean, warm)

    def _evict(self) -> None:
        while len(self._series) > self.config.max_series:
            self._series.popitem(last=False)

    def state_dict(self) -> dict[str, list[float]]:
        """A JSON-able snapshot (for persisting across restarts)."""
        return {f"{k[0]}\x1f{k[1]}": [s.mean, s.dev, s.count, s.missing] for k, s in self._series.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Restore a snapshot made by :meth:`state_dict`."""
        self._series.clear()
        for key, (mean, dev, count, missing) in state.items():
            entity, metric = key.split("\x1f", 1)
            self._series[(entity, metric)] = _SeriesState(mean, dev, int(count), int(missing))
        self._evict()
