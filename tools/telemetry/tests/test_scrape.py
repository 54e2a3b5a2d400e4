"""The services page's figures from hand-written exposition text: parsing, counter resets, quantiles
from histogram buckets, replicas summed, messaging and breaker state, and the targets file."""

from __future__ import annotations

import math

import pytest
from microshop_telemetry.scrape import (
    MetricsHistory,
    Scrape,
    Snapshot,
    Target,
    between,
    counter_increase,
    histogram_quantile,
    parse_metrics,
    parse_targets,
    services_report,
)

EXPOSITION = """\
# HELP http_server_requests_total HTTP requests served.
# TYPE http_server_requests_total counter
http_server_requests_total{method="POST",route="/orders",status="201"} 90.0
http_server_requests_total{method="POST",route="/orders",status="503"} 8.0
http_server_requests_total{method="GET",route="/orders/{order_id}",status="500"} 2.0
http_server_requests_total{method="GET",route="/health",status="200"} 500.0
http_server_requests_total{method="GET",route="/metrics",status="200"} 40.0
# TYPE http_server_requests_created gauge
http_server_requests_created{method="POST",route="/orders",status="201"} 1.7e9
# HELP http_server_request_duration_seconds Time to serve an HTTP request.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{le="0.01",method="POST",route="/orders"} 50.0
http_server_request_duration_seconds_bucket{le="0.1",method="POST",route="/orders"} 90.0
http_server_request_duration_seconds_bucket{le="+Inf",method="POST",route="/orders"} 98.0
http_server_request_duration_seconds_count{method="POST",route="/orders"} 98.0
http_server_request_duration_seconds_sum{method="POST",route="/orders"} 3.1
http_server_request_duration_seconds_bucket{le="0.01",method="GET",route="/orders/{order_id}"} 0.0
http_server_request_duration_seconds_bucket{le="0.1",method="GET",route="/orders/{order_id}"} 2.0
http_server_request_duration_seconds_bucket{le="+Inf",method="GET",route="/orders/{order_id}"} 2.0
http_server_request_duration_seconds_bucket{le="0.01",method="GET",route="/health"} 500.0
http_server_request_duration_seconds_bucket{le="0.1",method="GET",route="/health"} 500.0
http_server_request_duration_seconds_bucket{le="+Inf",method="GET",route="/health"} 500.0
# HELP circuit_breaker_state Circuit breaker state per target: 0 closed, 1 half-open, 2 open.
# TYPE circuit_breaker_state gauge
circuit_breaker_state{target="payments"} 2.0
circuit_breaker_state{target="inventory"} 0.0
# TYPE outbox_backlog gauge
outbox_backlog 3.0
# TYPE outbox_oldest_event_age_seconds gauge
outbox_oldest_event_age_seconds 12.5
# TYPE consumer_lag gauge
consumer_lag{consumer="orders-payments"} 4.0
# TYPE events_consumed_total counter
events_consumed_total{consumer="orders-payments",outcome="ok",type="PaymentCaptured"} 70.0
events_consumed_total{consumer="orders-payments",outcome="dead_letter",type="PaymentCaptured"} 1.0
events_consumed_total{consumer="orders-payments",outcome="dead_letter",type="unknown"} 2.0
"""


def test_parse_reduces_the_exposition_to_the_figures_without_probes_and_scrapes():
    snapshot = parse_metrics(EXPOSITION)
    assert snapshot.requests == 100.0  # /health and /metrics left out
    assert snapshot.errors == 10.0
    assert snapshot.buckets == ((0.01, 50.0), (0.1, 92.0), (math.inf, 100.0))
    assert snapshot.breakers == {"payments": 2, "inventory": 0}
    assert snapshot.outbox_backlog == 3.0 and snapshot.outbox_oldest_age == 12.5
    assert snapshot.consumer_lag == {"orders-payments": 4.0}
    assert snapshot.dead_letters == 3.0


def test_a_process_without_outbox_or_traffic_has_none_and_zeros():
    snapshot = parse_metrics("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n")
    assert snapshot == Snapshot()
    assert snapshot.outbox_backlog is None


def test_a_counter_that_went_down_was_reset_so_its_whole_value_is_new():
    assert counter_increase(10.0, 25.0) == 15.0
    assert counter_increase(100.0, 7.0) == 7.0
    assert counter_increase(5.0, 5.0) == 0.0


def test_between_two_scrapes_gives_rates_and_bucket_increases_and_survives_a_restart():
    earlier = Snapshot(requests=100.0, errors=10.0, buckets=((0.01, 50.0), (0.1, 92.0), (math.inf, 100.0)))
    later = Snapshot(requests=150.0, errors=10.0, buckets=((0.01, 90.0), (0.1, 142.0), (math.inf, 150.0)))
    interval = between(earlier, later, 5.0)
    assert interval.rate == 10.0 and interval.requests == 50.0 and interval.errors == 0.0
    assert interval.buckets == ((0.01, 40.0), (0.1, 50.0), (math.inf, 50.0))
    assert interval.error_ratio == 0.0
    restarted = Snapshot(requests=4.0, errors=1.0, buckets=((0.01, 1.0), (0.1, 4.0), (math.inf, 4.0)))
    after_restart = between(later, restarted, 2.0)
    assert after_restart.rate == 2.0 and after_restart.errors == 1.0
    assert after_restart.buckets == ((0.01, 1.0), (0.1, 4.0), (math.inf, 4.0))
    assert after_restart.error_ratio == 0.25


def test_quantiles_interpolate_inside_their_bucket_like_prometheus():
    buckets = ((0.01, 40.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * (50 - 40) / 50)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * (99 - 90) / 10)
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.005)  # the first bucket starts at 0
    # In +Inf's bucket: the highest finite bound, as Prometheus answers.
    assert histogram_quantile(0.99, ((0.01, 10.0), (math.inf, 100.0))) == 0.01
    assert histogram_quantile(0.99, ((0.01, 0.0), (math.inf, 0.0))) is None
    assert histogram_quantile(0.99, ()) is None


def test_parse_targets_reads_file_sd_json_and_refuses_other_shapes():
    targets = parse_targets('[{"targets": ["127.0.0.1:8103"], "labels": {"service": "orders", '
                            '"instance": "orders-2", "release": "v2"}}, {"targets": ["127.0.0.1:9"]}]')
    assert targets == [Target("127.0.0.1:8103", "orders", "orders-2", "v2"),
                       Target("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9", "")]
    assert targets[0].metrics_url == "http://127.0.0.1:8103/metrics"
    for bad in ("{", '{"targets": []}', '[{"labels": {}}]', '[{"targets": [3]}]'):
        with pytest.raises(ValueError):
            parse_targets(bad)


def _snapshot(requests: float, errors: float = 0.0, *, fast: float | None = None, **others) -> Snapshot:
    """``requests`` served, ``fast`` of them (all by default) within 10 ms, the rest within 100 ms."""
    fast = requests if fast is None else fast
    return Snapshot(requests=requests, errors=errors,
                    buckets=((0.01, fast), (0.1, requests), (math.inf, requests)), **others)


ORDERS_1 = Target("127.0.0.1:8103", "orders", "orders", "0.1.0")
ORDERS_2 = Target("127.0.0.1:9103", "orders", "orders-2", "v2")
USERS = Target("127.0.0.1:8101", "users", "users", "0.1.0")


def test_the_report_sums_replicas_per_round_and_keeps_each_replicas_own_figures():
    history = MetricsHistory(keep_seconds=600)
    targets = [ORDERS_1, ORDERS_2, USERS]
    history.add(1000.0, targets, {
        "orders": Scrape(1000.0, 0.01, _snapshot(100)),
        "orders-2": Scrape(1000.0, 0.01, _snapshot(0)),
        "users": Scrape(1000.0, 0.01, _snapshot(10)),
    })
    history.add(1005.0, targets, {
        "orders": Scrape(1005.0, 0.01, _snapshot(150, 5, fast=100)),  # 10/s, 10 % errors
        "orders-2": Scrape(1005.0, 0.01, _snapshot(25)),  # 5/s
        "users": Scrape(1005.0, 0.5, error="no answer within 2 s"),
    })
    history.add(1010.0, targets, {
        "orders": Scrape(1010.0, 0.01, _snapshot(3)),  # restarted: 3 new requests
        "orders-2": Scrape(1010.0, 0.01, _snapshot(50)),
        "users": Scrape(1010.0, 0.01, _snapshot(12)),
    })
    orders, users = services_report(history, now=1010.0, window_seconds=60)
    assert orders["service"] == "orders" and users["service"] == "users"
    assert orders["series"]["t"] == [1005.0, 1010.0]
    assert orders["series"]["rate"] == pytest.approx([15.0, 5.6])
    assert orders["series"]["error_pct"] == pytest.approx([100 * 5 / 75, 0.0])
    # Round one: of the 75 requests only orders-2's 25 within 10 ms, so the p99 is in the 10-100 ms bucket.
    assert 10 < orders["series"]["p99_ms"][0] <= 100
    assert orders["current"]["rate"] == pytest.approx((53 / 10) + (50 / 10))
    assert orders["replicas_up"] == 2
    first, second = orders["replicas"]
    assert (first["instance"], first["release"], first["up"]) == ("orders", "0.1.0", True)
    assert first["rate"] == pytest.approx(53 / 10)
    assert second["release"] == "v2" and second["rate"] == pytest.approx(5.0)
    # users was down in the middle round: no interval on either side of it, so no series yet.
    assert users["series"]["t"] == [] and users["current"]["rate"] is None
    assert users["replicas"][0]["up"] is True


def test_a_replica_down_now_is_reported_with_its_error():
    history = MetricsHistory()
    history.add(1000.0, [USERS], {"users": Scrape(1000.0, 2.0, error="no answer within 2 s")})
    (users,) = services_report(history, now=1001.0)
    replica = users["replicas"][0]
    assert replica["up"] is False and replica["scraped"] is True
    assert replica["error"] == "no answer within 2 s" and users["replicas_up"] == 0


def test_messaging_and_breakers_per_service_take_the_worst_replica_and_lag_is_bad_only_when_it_lasts():
    history = MetricsHistory()
    targets = [ORDERS_1, ORDERS_2]
    for at, lag in ((1000.0, 0.0), (1010.0, 4.0), (1040.0, 6.0), (1075.0, 2.0)):
        history.add(at, targets, {
            "orders": Scrape(at, 0.01, _snapshot(0, breakers={"payments": 0, "inventory": 0}, outbox_backlog=2.0,
                                                 outbox_oldest_age=3.0, consumer_lag={"orders-payments": lag},
                                                 dead_letters=1.0)),
            "orders-2": Scrape(at, 0.01, _snapshot(0, breakers={"payments": 2}, outbox_backlog=5.0,
                                                   outbox_oldest_age=9.0, consumer_lag={"orders-payments": 0.0},
                                                   dead_letters=2.0)),
        })
    (orders,) = services_report(history, now=1075.0)
    assert orders["breakers"] == [{"target": "inventory", "state": "closed"}, {"target": "payments", "state": "open"}]
    assert orders["outbox_backlog"] == 5.0 and orders["outbox_oldest_age"] == 9.0
    assert orders["dead_letters"] == 3.0
    (lag,) = orders["consumer_lag"]
    assert lag["consumer"] == "orders-payments" and lag["messages"] == 2.0
    assert lag["behind_seconds"] == 65.0 and lag["bad"] is True
    (early,) = services_report(history, now=1040.0 + 0.0)[0]["consumer_lag"]
    assert early["behind_seconds"] == 30.0 and early["bad"] is False


def test_history_keeps_only_its_window():
    history = MetricsHistory(keep_seconds=10)
    for at in (0.0, 5.0, 10.0, 15.0, 20.0):
        history.add(at, [USERS], {"users": Scrape(at, 0.01, _snapshot(at))})
    assert [one.at for one in history.rounds] == [10.0, 15.0, 20.0]
