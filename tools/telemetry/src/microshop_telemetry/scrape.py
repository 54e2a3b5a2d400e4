"""What the console shows of the services' ``/metrics``: the exposition text reduced to a few
figures per scrape, the history of scrapes per target, and the figures derived from it (request
rate, error ratio and latency quantiles from counter and histogram deltas, breaker states, outbox,
consumer lag, dead letters), per replica and per service.

Pure functions and plain data: scraper.py does the fetching. The metric names are the chassis's
(microshop_chassis.metrics); deploy/observability has the same figures as Prometheus rules.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microshop_chassis.middleware import QUIET_PATHS
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "http_server_requests_total"
DURATION_BUCKET = "http_server_request_duration_seconds_bucket"
BREAKER_STATE = "circuit_breaker_state"
OUTBOX_BACKLOG = "outbox_backlog"
OUTBOX_OLDEST_AGE = "outbox_oldest_event_age_seconds"
CONSUMER_LAG = "consumer_lag"
EVENTS_CONSUMED = "events_consumed_total"
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
# A consumer behind for this long is marked: a moment of lag during a burst is normal.
LAG_TOLERATED_SECONDS = 60.0


@dataclass(frozen=True)
class Target:
    """One process to scrape, as Prometheus file_sd names it: ``host:port`` and its labels."""

    address: str
    service: str
    instance: str
    release: str = ""

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}/metrics"


def parse_targets(text: str) -> list[Target]:
    """A Prometheus file_sd JSON document (``[{"targets": [...], "labels": {...}}]``) as targets;
    ``ValueError`` when it is not one. An entry without a ``service`` label is named by its address."""
    try:
        groups = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(groups, list):
        raise ValueError("a file_sd document is a JSON list of target groups")
    targets = []
    for group in groups:
        if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
            raise ValueError("each target group has a list of targets")
        labels = group.get("labels") or {}
        for address in group["targets"]:
            if not isinstance(address, str) or not address:
                raise ValueError(f"a target is host:port, not {address!r}")
            targets.append(Target(address=address, service=str(labels.get("service") or address),
                                  instance=str(labels.get("instance") or address),
                                  release=str(labels.get("release") or "")))
    return targets


def read_targets(path: Path) -> list[Target]:
    """The file's targets; none when it does not exist (the launcher has not written it yet)."""
    try:
        return parse_targets(path.read_text())
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class Snapshot:
    """What one scrape found, reduced to the figures the console derives from. Requests and the
    latency histogram leave out /health, /ready and /metrics: the probes and the scraper itself."""

    requests: float = 0.0
    errors: float = 0.0  # the 5xx among them
    # (upper bound in seconds, cumulative count), every route summed, ascending; the last is +Inf.
    buckets: tuple[tuple[float, float], ...] = ()
    breakers: Mapping[str, int] = field(default_factory=dict)  # downstream target -> 0/1/2
    outbox_backlog: float | None = None  # None: this process has no outbox relay
    outbox_oldest_age: float | None = None
    consumer_lag: Mapping[str, float] = field(default_factory=dict)  # durable -> messages
    dead_letters: float = 0.0  # events this process dead-lettered since it started


def parse_metrics(text: str) -> Snapshot:
    """The Prometheus text exposition of a service's /metrics, as a Snapshot."""
    requests = errors = dead_letters = 0.0
    buckets: dict[float, float] = {}
    breakers: dict[str, int] = {}
    lag: dict[str, float] = {}
    backlog = oldest = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == REQUESTS and labels.get("route") not in QUIET_PATHS:
                requests += value
                if labels.get("status", "").startswith("5"):
                    errors += value
            elif name == DURATION_BUCKET and labels.get("route") not in QUIET_PATHS:
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
            elif name == BREAKER_STATE:
                breakers[labels.get("target", "")] = int(value)
            elif name == OUTBOX_BACKLOG:
                backlog = value
            elif name == OUTBOX_OLDEST_AGE:
                oldest = value
            elif name == CONSUMER_LAG:
                lag[labels.get("consumer", "")] = value
            elif name == EVENTS_CONSUMED and labels.get("outcome") == "dead_letter":
                dead_letters += value
    return Snapshot(requests=requests, errors=errors, buckets=tuple(sorted(buckets.items())), breakers=breakers,
                    outbox_backlog=backlog, outbox_oldest_age=oldest, consumer_lag=lag, dead_letters=dead_letters)


def counter_increase(earlier: float, later: float) -> float:
    """A counter's increase between two scrapes. A counter that went down was reset (its process
    restarted and counted from zero), so all of its later value is new: Prometheus's rule."""
    return later if later < earlier else later - earlier


@dataclass(frozen=True)
class Interval:
    """What happened between scrapes: requests, errors, and each latency bucket's increase
    (cumulative buckets), over ``seconds``; ``rate`` is requests per second, summed over replicas."""

    rate: float = 0.0
    seconds: float = 0.0
    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)


def between(earlier: Snapshot, later: Snapshot, seconds: float) -> Interval:
    """The increase from one scrape of a process to its next, ``seconds`` later."""
    requests = counter_increase(earlier.requests, later.requests)
    errors = counter_increase(earlier.errors, later.errors)
    before = dict(earlier.buckets)
    # The histogram as a whole: a lower total means a restart (each bucket counted again from zero).
    reset = bool(later.buckets) and later.buckets[-1][1] < before.get(math.inf, 0.0)
    buckets = tuple((bound, count if reset else max(count - before.get(bound, 0.0), 0.0))
                    for bound, count in later.buckets)
    return Interval(rate=requests / seconds if seconds > 0 else 0.0, seconds=seconds, requests=requests,
                    errors=errors, buckets=buckets)


def side_by_side(intervals: Iterable[Interval]) -> Interval:
    """The intervals of replicas over the same time: their requests and their rates add up."""
    intervals = list(intervals)
    return _added(intervals, rate=sum(interval.rate for interval in intervals),
                  seconds=max((interval.seconds for interval in intervals), default=0.0))


def in_sequence(intervals: Iterable[Interval]) -> Interval:
    """Consecutive intervals of one process as one: its requests over their whole length."""
    intervals = list(intervals)
    seconds = sum(interval.seconds for interval in intervals)
    requests = sum(interval.requests for interval in intervals)
    return _added(intervals, rate=requests / seconds if seconds > 0 else 0.0, seconds=seconds)


def _added(intervals: Sequence[Interval], *, rate: float, seconds: float) -> Interval:
    buckets: dict[float, float] = {}
    for interval in intervals:
        for bound, count in interval.buckets:
            buckets[bound] = buckets.get(bound, 0.0) + count
    return Interval(rate=rate, seconds=seconds, requests=sum(interval.requests for interval in intervals),
                    errors=sum(interval.errors for interval in intervals), buckets=tuple(sorted(buckets.items())))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of cumulative buckets, interpolated linearly inside its bucket as
    Prometheus's histogram_quantile does; the highest finite bound when it falls in +Inf's; None
    without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Scrape:
    """One scrape of one target: when, how long it took, and what it found (None: it failed)."""

    at: float  # Unix time
    duration: float
    snapshot: Snapshot | None = None
    error: str = ""

    @property
    def up(self) -> bool:
        return self.snapshot is not None


@dataclass(frozen=True)
class Round:
    """Every target's scrape of one round (they run together)."""

    at: float
    scrapes: Mapping[str, Scrape]  # by instance


def intervals_of(rounds: Sequence[Round], instance: str) -> list[tuple[float, Interval]]:
    """Each successful scrape of ``instance`` after a successful one in the round before, as the
    interval between them, keyed by the later round's time."""
    found = []
    for earlier, later in zip(rounds, rounds[1:], strict=False):
        before, after = earlier.scrapes.get(instance), later.scrapes.get(instance)
        if before and after and before.snapshot and after.snapshot:
            found.append((later.at, between(before.snapshot, after.snapshot, after.at - before.at)))
    return found


def lag_since(rounds: Sequence[Round], instance: str, consumer: str) -> float | None:
    """Since when ``consumer`` has been behind without a break, as this instance last saw it; None
    when it is not behind now. A failed scrape neither breaks nor extends the run."""
    since = None
    for one in rounds:
        scrape = one.scrapes.get(instance)
        if scrape is None or scrape.snapshot is None:
            continue
        if scrape.snapshot.consumer_lag.get(consumer, 0.0) > 0:
            since = one.at if since is None else since
        else:
            since = None
    return since


class MetricsHistory:
    """The scrape rounds of the last ``keep_seconds``, and the targets the last round read."""

    def __init__(self, keep_seconds: float = 1800.0) -> None:
        self.keep_seconds = keep_seconds
        self.rounds: deque[Round] = deque()
        self.targets: list[Target] = []

    def add(self, at: float, targets: Sequence[Target], scrapes: Mapping[str, Scrape]) -> None:
        self.targets = list(targets)
        self.rounds.append(Round(at, dict(scrapes)))
        while self.rounds and self.rounds[0].at < at - self.keep_seconds:
            self.rounds.popleft()


def _figures(interval: Interval | None) -> dict[str, float | None]:
    if interval is None:
        return {"rate": None, "error_pct": None, "p50_ms": None, "p99_ms": None}
    p50, p99, ratio = interval.quantile(0.5), interval.quantile(0.99), interval.error_ratio
    return {"rate": interval.rate, "error_pct": None if ratio is None else 100 * ratio,
            "p50_ms": None if p50 is None else 1000 * p50, "p99_ms": None if p99 is None else 1000 * p99}


def services_report(history: MetricsHistory, now: float, window_seconds: float = 60.0) -> list[dict[str, Any]]:
    """Per service (in the targets' order): its series over the kept rounds (requests/s, error %,
    p99 ms per round, replicas summed), its figures over the last ``window_seconds``, its
    messaging and breaker state, and each replica's own figures and scrape state."""
    rounds = list(history.rounds)
    by_service: dict[str, list[Target]] = {}
    for target in history.targets:
        by_service.setdefault(target.service, []).append(target)
    report = []
    for service, targets in by_service.items():
        per_round: dict[float, list[Interval]] = {}
        replicas = []
        recent: list[Interval] = []
        for target in targets:
            intervals = intervals_of(rounds, target.instance)
            for at, interval in intervals:
                per_round.setdefault(at, []).append(interval)
            in_window = [interval for at, interval in intervals if at >= now - window_seconds]
            mine = in_sequence(in_window) if in_window else None
            if mine is not None:
                recent.append(mine)
            replicas.append(_replica(rounds, target, mine, now))
        times = sorted(per_round)
        merged = [_figures(side_by_side(per_round[at])) for at in times]
        current = _figures(side_by_side(recent)) if recent else _figures(None)
        report.append({
            "service": service,
            "series": {"t": times, **{key: [figures[key] for figures in merged]
                                      for key in ("rate", "error_pct", "p99_ms")}},
            "current": current,
            **_messaging(replicas),
            "replicas": replicas,
        })
    return report


def _replica(rounds: Sequence[Round], target: Target, recent: Interval | None, now: float) -> dict[str, Any]:
    scrapes = [one.scrapes[target.instance] for one in rounds if target.instance in one.scrapes]
    last = scrapes[-1] if scrapes else None
    latest = next((scrape.snapshot for scrape in reversed(scrapes) if scrape.snapshot), None)
    lag = []
    for consumer, messages in sorted((latest.consumer_lag if latest else {}).items()):
        since = lag_since(rounds, target.instance, consumer)
        behind_for = now - since if since is not None else 0.0
        lag.append({"consumer": consumer, "messages": messages, "behind_seconds": behind_for,
                    "bad": messages > 0 and behind_for >= LAG_TOLERATED_SECONDS})
    return {
        "instance": target.instance, "address": target.address, "release": target.release,
        "up": bool(last and last.up), "scraped": last is not None,
        "last_scrape": last.at if last else None, "scrape_ms": 1000 * last.duration if last else None,
        "error": last.error if last else "",
        **_figures(recent),
        "breakers": [{"target": name, "state": BREAKER_STATES.get(state, str(state))}
                     for name, state in sorted((latest.breakers if latest else {}).items())],
        "outbox_backlog": latest.outbox_backlog if latest else None,
        "outbox_oldest_age": latest.outbox_oldest_age if latest else None,
        "consumer_lag": lag,
        "dead_letters": latest.dead_letters if latest else 0.0,
    }


def _messaging(replicas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A service's messaging and breaker state from its replicas. The outbox table and each durable
    consumer are shared by the replicas, so each replica reports the same backlog or lag: the
    highest is the service's. Dead letters are counted by the process that made them: summed."""
    backlogs = [r["outbox_backlog"] for r in replicas if r["outbox_backlog"] is not None]
    ages = [r["outbox_oldest_age"] for r in replicas if r["outbox_oldest_age"] is not None]
    lag: dict[str, dict[str, Any]] = {}
    for replica in replicas:
        for entry in replica["consumer_lag"]:
            known = lag.get(entry["consumer"])
            if known is None or (entry["messages"], entry["behind_seconds"]) > (known["messages"],
                                                                                known["behind_seconds"]):
                lag[entry["consumer"]] = entry
    worst: dict[str, str] = {}
    order = list(BREAKER_STATES.values())
    for replica in replicas:
        for breaker in replica["breakers"]:
            state, seen = breaker["state"], worst.get(breaker["target"])
            if seen is None or _rank(order, state) > _rank(order, seen):
                worst[breaker["target"]] = state
    return {
        "outbox_backlog": max(backlogs) if backlogs else None,
        "outbox_oldest_age": max(ages) if ages else None,
        "consumer_lag": [lag[name] for name in sorted(lag)],
        "dead_letters": sum(r["dead_letters"] for r in replicas),
        "breakers": [{"target": name, "state": state} for name, state in sorted(worst.items())],
        "replicas_up": sum(r["up"] for r in replicas),
    }


def _rank(order: list[str], state: str) -> int:
    return order.index(state) if state in order else len(order)
