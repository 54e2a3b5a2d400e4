"""Price quotes: inventory is asked once for prices reused until they are ``valid_seconds`` old."""

import pytest
from microshop_orders.clients import Price, PriceQuotes
from microshop_orders.domain import UnknownProducts


class Catalog:
    """inventory's price lookup, counting what it is asked."""

    def __init__(self) -> None:
        self.prices = {"mug": 1200, "tee": 2500}
        self.asked: list[list[str]] = []

    async def fetch(self, skus: list[str]) -> dict[str, Price]:
        self.asked.append(list(skus))
        missing = sorted(set(skus) - set(self.prices))
        if missing:
            raise UnknownProducts(missing)
        return {sku: Price(self.prices[sku], "USD") for sku in skus}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def catalog() -> Catalog:
    return Catalog()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_quote_is_reused_until_it_is_too_old(catalog, clock):
    quotes = PriceQuotes(catalog.fetch, valid_seconds=2.0, clock=clock)
    assert await quotes.prices(["mug", "tee"]) == {"mug": Price(1200, "USD"), "tee": Price(2500, "USD")}
    catalog.prices["mug"] = 1500
    clock.now += 1.9
    assert (await quotes.prices(["mug"]))["mug"].unit_price_cents == 1200  # still the quote
    clock.now += 0.2
    assert (await quotes.prices(["mug"]))["mug"].unit_price_cents == 1500  # asked again
    assert catalog.asked == [["mug", "tee"], ["mug"]]


async def test_only_the_skus_not_quoted_are_asked_for(catalog, clock):
    quotes = PriceQuotes(catalog.fetch, valid_seconds=2.0, clock=clock)
    await quotes.prices(["mug"])
    assert set(await quotes.prices(["mug", "tee"])) == {"mug", "tee"}
    assert catalog.asked == [["mug"], ["tee"]]


async def test_an_unknown_sku_is_refused_every_time_and_a_new_one_seen_at_once(catalog, clock):
    quotes = PriceQuotes(catalog.fetch, valid_seconds=2.0, clock=clock)
    for _ in range(2):
        with pytest.raises(UnknownProducts):
            await quotes.prices(["mug", "lamp"])
    catalog.prices["lamp"] = 4000
    assert (await quotes.prices(["lamp"]))["lamp"].unit_price_cents == 4000
    assert len(catalog.asked) == 3


async def test_zero_seconds_asks_inventory_every_time(catalog, clock):
    quotes = PriceQuotes(catalog.fetch, valid_seconds=0, clock=clock)
    await quotes.prices(["mug"])
    await quotes.prices(["mug"])
    assert catalog.asked == [["mug"], ["mug"]]


async def test_the_quotes_kept_are_bounded(catalog, clock):
    catalog.prices = {f"sku-{n}": 100 + n for n in range(10)}
    quotes = PriceQuotes(catalog.fetch, valid_seconds=2.0, max_entries=4, clock=clock)
    for n in range(10):
        await quotes.prices([f"sku-{n}"])
        assert len(quotes) <= 4
    assert (await quotes.prices(["sku-9"]))["sku-9"].unit_price_cents == 109
    assert len(catalog.asked) == 10  # the newest quote survived the clearing
