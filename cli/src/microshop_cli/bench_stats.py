"""Latency figures of a bench: percentiles, a latency summary and the points of a CDF."""

from __future__ import annotations

import statistics

PERCENTILES = (50, 95, 99, 99.9)


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``th percentile (0 < p < 100, e.g. 99.9) of ``values``, interpolated between the two
    nearest ranks; None when there are none."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if float(p).is_integer():
        return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_ms(values: list[float], percentiles: tuple[float, ...] = PERCENTILES) -> dict[str, float | None]:
    """``{"p50": ms, ..., "p99.9": ms, "max": ms}`` of latencies in seconds (None when there are none)."""
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    figures = {f"p{p:g}": ms(percentile(values, p)) for p in percentiles}
    figures["max"] = ms(max(values, default=None))
    return figures


def cdf(values: list[float], points: int = 200) -> list[tuple[float, float]]:
    """At most ``points`` (value, share of values <= it) pairs, evenly spaced by rank, ending at
    (max, 1.0): what a latency distribution plot draws."""
    ordered = sorted(values)
    if not ordered:
        return []
    step = max(1, len(ordered) // points)
    ranks = list(range(step - 1, len(ordered), step))
    if ranks[-1] != len(ordered) - 1:
        ranks.append(len(ordered) - 1)
    return [(ordered[rank], (rank + 1) / len(ordered)) for rank in ranks]
