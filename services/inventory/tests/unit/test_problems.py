"""Every refusal of inventory's domain is answered with its declared problem type and exactly the
members its callers read; the cross-service ones are those of the contracts."""

import pytest
from microshop_chassis.contracts import OUT_OF_STOCK, RESERVATION_CLOSED, RESERVATION_MISMATCH, UNKNOWN_SKU
from microshop_chassis.errors import PROBLEM_BASE, problem_for
from microshop_inventory.api import ERRORS
from microshop_inventory.domain import (
    COMMIT,
    EXPIRE,
    RELEASE,
    RESTOCK,
    InventoryError,
    OutOfStock,
    ProductNotFound,
    ReservationBusy,
    ReservationClosed,
    ReservationCommitted,
    ReservationMismatch,
    ReservationNotCommitted,
    ReservationNotFound,
    ReservationStateError,
    ReservationStatus,
    StockBelowReserved,
    UnknownSkus,
)

S = ReservationStatus


@pytest.mark.parametrize(
    ("error", "slug", "status", "members"),
    [
        (ProductNotFound("MUG"), "product-not-found", 404, {"sku": "MUG"}),
        (StockBelowReserved("MUG", 3, 2), "stock-below-reserved", 409, {"sku": "MUG", "reserved": 3}),
        (OutOfStock(["PEN", "TEA"]), "out-of-stock", 409, {"skus": ["PEN", "TEA"]}),
        (UnknownSkus(["GHOST"]), "unknown-sku", 422, {"skus": ["GHOST"]}),
        (ReservationNotFound("o-1"), "reservation-not-found", 404, {"order_id": "o-1"}),
        (ReservationClosed.refusing("o-1", S.EXPIRED, "commit"), "reservation-closed", 409,
         {"reservation_status": "EXPIRED"}),
        (ReservationMismatch("other items", S.HELD), "reservation-mismatch", 409, {"reservation_status": "HELD"}),
        (ReservationCommitted.refusing("o-1", S.COMMITTED, "release"), "reservation-committed", 409,
         {"reservation_status": "COMMITTED"}),
        (ReservationNotCommitted.refusing("o-1", S.HELD, "restock"), "reservation-not-committed", 409,
         {"reservation_status": "HELD"}),
        (ReservationBusy("o-1"), "reservation-busy", 503, {}),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_refusal_has_its_problem_and_only_its_members(error, slug, status, members):
    problem = problem_for(ERRORS[type(error)], error)
    body = problem.body()
    assert (body["type"], body["status"], problem.status) == (PROBLEM_BASE + slug, status, status)
    assert body["detail"] == str(error) and body["title"]
    assert {key: value for key, value in body.items() if key not in ("type", "title", "status", "detail")} == members
    assert problem.headers is None


def test_every_domain_error_is_mapped_and_the_shared_ones_are_the_contracts():
    def leaves(cls):
        subclasses = cls.__subclasses__()
        return {cls} if not subclasses else {leaf for sub in subclasses for leaf in leaves(sub)}

    assert leaves(InventoryError) == set(ERRORS)
    assert (ERRORS[OutOfStock], ERRORS[UnknownSkus]) == (OUT_OF_STOCK, UNKNOWN_SKU)
    assert (ERRORS[ReservationClosed], ERRORS[ReservationMismatch]) == (RESERVATION_CLOSED, RESERVATION_MISMATCH)


def test_each_step_is_refused_with_the_error_its_table_names():
    assert {step.name: step.conflict for step in (COMMIT, RELEASE, RESTOCK, EXPIRE)} == {
        "commit": ReservationClosed, "release": ReservationCommitted, "restock": ReservationNotCommitted,
        "expire": ReservationClosed}
    refusal = COMMIT.refusal("o-1", S.EXPIRED)
    assert isinstance(refusal, ReservationClosed) and isinstance(refusal, ReservationStateError)
    assert str(refusal) == "The reservation for order o-1 is EXPIRED; it cannot commit."
    assert refusal.reservation_status == "EXPIRED"

