"""The demo catalog ``microshop up`` creates, importable so tests can refer to the same products."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogItem:
    sku: str
    name: str
    description: str
    price_cents: int
    on_hand: int
    currency: str = "USD"


DEMO_CATALOG: tuple[CatalogItem, ...] = (
    CatalogItem(
        "MUG-STONEWARE-12", "Stoneware Coffee Mug",
        "A 12 oz (350 ml) glazed stoneware mug with a comfortable handle. Dishwasher and microwave safe.",
        1450, 120,
    ),
    CatalogItem(
        "TEE-ORGANIC-M", "Organic Cotton T-Shirt (M)",
        "Soft 180 g/m² organic cotton tee in heather grey, size M. Pre-shrunk, relaxed fit.",
        2400, 80,
    ),
    CatalogItem(
        "BOTTLE-STEEL-750", "Insulated Steel Water Bottle",
        "750 ml double-walled stainless steel bottle: cold for 24 hours, hot for 12. Leak-proof lid.",
        2900, 60,
    ),
    CatalogItem(
        "NOTEBOOK-A5-DOT", "A5 Dot-Grid Notebook",
        "192 numbered pages of 100 g/m² ivory paper, lay-flat binding, two ribbon markers.",
        1600, 150,
    ),
    CatalogItem(
        "HEADPHONES-ANC-1", "Wireless Noise-Cancelling Headphones",
        "Over-ear Bluetooth 5.3 headphones with active noise cancelling and 30 hours of battery.",
        14900, 25,
    ),
    CatalogItem(
        "KEYBOARD-TKL-MX", "Mechanical Keyboard (Tenkeyless)",
        "Hot-swappable tactile switches, PBT keycaps, aluminium top plate and a detachable USB-C cable.",
        8900, 40,
    ),
    CatalogItem(
        "BACKPACK-DAY-20L", "Everyday Backpack 20 L",
        "Water-resistant recycled nylon with a padded 15-inch laptop sleeve and a luggage pass-through.",
        6900, 35,
    ),
    # Only three in stock: the one to use for out-of-stock demos.
    CatalogItem(
        "WATCH-FIELD-LTD", "Limited Edition Field Watch",
        "A numbered run of 200: 38 mm steel case, sapphire crystal, automatic movement, canvas strap.",
        34900, 3,
    ),
)

LOW_STOCK_SKU = "WATCH-FIELD-LTD"
