"""The composition root, built but not started: what it documents, and that nothing in it is
shared between two instances in one process."""

from microshop_chassis.contracts import OUT_OF_STOCK, RESERVATION_CLOSED, RESERVATION_MISMATCH, UNKNOWN_SKU
from microshop_inventory.bootstrap import build
from microshop_inventory.service import Catalog, Reservations
from microshop_inventory.settings import InventorySettings


def test_the_routes_document_the_problems_orders_acts_on(tmp_path):
    paths = build(InventorySettings(data_dir=tmp_path)).app.openapi()["paths"]

    def documented(path: str, method: str) -> set[tuple[str, str]]:
        responses = paths[path][method]["responses"]
        return {(status, example["value"]["type"]) for status, response in responses.items()
                for example in response.get("content", {}).get("application/problem+json", {})
                .get("examples", {}).values()}

    reserve = documented("/reservations/{order_id}", "put")
    for problem_type in (OUT_OF_STOCK, UNKNOWN_SKU, RESERVATION_CLOSED, RESERVATION_MISMATCH):
        assert (str(problem_type.status), problem_type.uri) in reserve
    assert (str(RESERVATION_CLOSED.status), RESERVATION_CLOSED.uri) in documented(
        "/reservations/{order_id}/commit", "post")


def test_two_instances_share_no_part(tmp_path):
    first = build(InventorySettings(data_dir=tmp_path / "a", reservation_ttl_seconds=60))
    second = build(InventorySettings(data_dir=tmp_path / "b", reservation_ttl_seconds=90))
    assert first.app is not second.app and first.metrics.registry is not second.metrics.registry
    for kind in (Catalog, Reservations):
        assert first.app.provided[kind].db is not second.app.provided[kind].db
    assert (first.app.provided[Reservations].ttl_seconds, second.app.provided[Reservations].ttl_seconds) == (60, 90)
