"""verify's invariants on hand-made snapshots: a consistent world passes, and each kind of
inconsistency a fault could leave behind is found and named."""

import copy

from microshop_cli.verify import Snapshot, check_all


def order(order_id, status, sku="MUG", quantity=1, price=1000):
    return {"id": order_id, "status": status, "total_cents": quantity * price,
            "items": [{"sku": sku, "quantity": quantity, "unit_price_cents": price}]}


def mail(order_id, event, message_id=None):
    return {"message_id": message_id or f"<{order_id}-{event}@x>",
            "headers": {"X-Order-Id": order_id, "X-Microshop-Event-Type": event}}


def consistent() -> Snapshot:
    orders = [order("o1", "CONFIRMED", quantity=2), order("o2", "REJECTED"), order("o3", "CANCELLED")]
    return Snapshot(
        orders=orders,
        payments=[{"id": "p1", "order_id": "o1", "status": "CAPTURED", "amount_cents": 2000},
                  {"id": "p2", "order_id": "o2", "status": "DECLINED", "amount_cents": 1000},
                  {"id": "p3", "order_id": "o3", "status": "REFUNDED", "amount_cents": 1000}],
        ledger={"captured_cents": 3000, "refunded_cents": 1000, "net_cents": 2000},
        stock=[{"sku": "MUG", "on_hand": 8, "reserved": 0, "received_units": 10, "sold_units": 2}],
        processor_charges=[{"amount_cents": 2000, "status": "succeeded", "refunded": False},
                           {"amount_cents": 1000, "status": "declined", "refunded": False},
                           {"amount_cents": 1000, "status": "succeeded", "refunded": True}],
        mail=[mail("o1", "OrderConfirmed"), mail("o2", "OrderRejected"), mail("o3", "OrderConfirmed"),
              mail("o3", "OrderCancelled")],
        sales={"orders_confirmed": 1, "revenue_cents": 2000, "units_sold": 2, "orders_rejected": 1,
               "orders_cancelled": 1, "payments_captured_cents": 3000, "payments_refunded_cents": 1000},
        messaging={"orders": {"outbox": {"backlog": 0}, "consumers": [], "dead_letters": {}},
                   "reports": {"outbox": None,
                               "consumers": [{"durable": "reports", "num_pending": 0, "num_ack_pending": 0}],
                               "dead_letters": {"reports": 0}}},
    )


def failed(snapshot: Snapshot) -> dict[int, list[str]]:
    return {c.number: c.problems for c in check_all(snapshot) if not c.ok}


def test_a_consistent_system_passes_every_check_and_is_quiet():
    snapshot = consistent()
    assert failed(snapshot) == {}
    assert snapshot.quiet()


def test_stock_sold_without_a_confirmed_order_is_a_conservation_violation():
    snapshot = consistent()
    snapshot.stock[0].update(on_hand=7, sold_units=3)  # one unit left the shelf for no order
    problems = failed(snapshot)[1]
    assert any("received 10 != on hand 7" in p for p in problems)
    assert any("3 sold, orders 2" in p for p in problems)


def test_stock_left_reserved_is_reported_and_not_quiet():
    snapshot = consistent()
    snapshot.stock[0]["reserved"] = 1
    assert any("still reserved" in p for p in failed(snapshot)[1])
    assert not snapshot.quiet()


def test_a_capture_for_a_rejected_order_breaks_the_books():
    snapshot = consistent()
    snapshot.payments[1]["status"] = "CAPTURED"
    snapshot.ledger.update(captured_cents=4000, net_cents=3000)
    snapshot.processor_charges[1]["status"] = "succeeded"
    problems = failed(snapshot)[2]
    assert any("net 3000 != CONFIRMED orders' total 2000" in p for p in problems)
    assert any("o2 is REJECTED but its payment is CAPTURED" in p for p in problems)


def test_a_payment_without_an_order_and_a_second_payment_are_found():
    snapshot = consistent()
    snapshot.payments.append({"id": "p9", "order_id": "ghost", "status": "CAPTURED", "amount_cents": 1})
    snapshot.payments.append({"id": "p10", "order_id": "o1", "status": "DECLINED", "amount_cents": 2000})
    problems = failed(snapshot)[2]
    assert any("unknown order ghost" in p for p in problems)
    assert any("order o1: 2 payments" in p for p in problems)


def test_a_pending_order_and_a_lost_accepted_order_are_violations():
    snapshot = consistent()
    snapshot.orders.append(order("o4", "PENDING"))
    problems = {c.number: c.problems for c in check_all(snapshot, accepted_order_ids=["o1", "lost"])}
    assert "1 orders still PENDING" in problems[3]
    assert any("lost was accepted (2xx) but does not exist" in p for p in problems[3])
    assert not snapshot.quiet()


def test_two_different_mails_for_one_order_event_and_a_missing_one_are_found():
    snapshot = consistent()
    snapshot.mail.append(mail("o1", "OrderConfirmed", message_id="<other@x>"))
    snapshot.mail = [m for m in snapshot.mail if m["headers"]["X-Microshop-Event-Type"] != "OrderRejected"]
    problems = failed(snapshot)[4]
    assert "order o1: 2 different OrderConfirmed e-mails" in problems
    assert "order o2: no OrderRejected e-mail" in problems


def test_a_resend_with_the_same_message_id_is_counted_but_not_a_violation():
    snapshot = consistent()
    snapshot.mail.append(copy.deepcopy(snapshot.mail[0]))
    effects = next(c for c in check_all(snapshot) if c.number == 4)
    assert effects.ok and "1 re-deliveries with the same Message-ID" in effects.figures


def test_outbox_backlog_lag_and_dead_letters_are_violations():
    snapshot = consistent()
    snapshot.messaging["orders"]["outbox"]["backlog"] = 3
    snapshot.messaging["reports"]["consumers"][0]["num_pending"] = 2
    snapshot.messaging["reports"]["dead_letters"]["reports"] = 1
    snapshot.messaging["payments"] = {"error": "payments /admin/messaging: HTTP 503"}
    problems = failed(snapshot)[5]
    assert "orders: 3 events still in the outbox" in problems
    assert "reports: consumers 2 events behind" in problems
    assert "reports: 1 events dead-lettered" in problems
    assert any(p.startswith("payments:") for p in problems)
    assert not snapshot.quiet()


def test_a_consumer_whose_lag_is_unknown_is_neither_quiet_nor_passed():
    snapshot = consistent()
    snapshot.messaging["reports"]["consumers"][0].update(num_pending=None, num_ack_pending=None)
    assert not snapshot.quiet()
    assert failed(snapshot)[5] == ["reports: lag of reports unknown (durable not on the broker)"]


def test_a_report_that_counted_an_event_twice_does_not_converge():
    snapshot = consistent()
    snapshot.sales["revenue_cents"] = 4000
    assert failed(snapshot)[6] == ["revenue_cents: report 4000 != 2000 from orders and payments"]
