"""Each service's OpenAPI document is published in contracts/openapi/<service>.json, and the
committed file must match what the code serves, so a change of API shows up in review.

Refresh after an intended change: MICROSHOP_UPDATE_CONTRACTS=1 python -m pytest tests/contracts
"""

import importlib
import json
import os
from pathlib import Path

import pytest
from microshop_chassis.services import names

ROOT = Path(__file__).resolve().parents[2]
SERVICES = names()


def served_document(service: str, tmp_path: Path) -> dict:
    bootstrap = importlib.import_module(f"microshop_{service}.bootstrap")
    settings_module = importlib.import_module(f"microshop_{service}.settings")
    settings_class = next(
        value for name, value in vars(settings_module).items()
        if name.endswith("Settings") and name != "ServiceSettings" and isinstance(value, type)
    )
    return bootstrap.build(settings_class(data_dir=tmp_path)).app.openapi()


@pytest.mark.parametrize("service", SERVICES)
def test_published_openapi_document_matches_the_code(service, tmp_path):
    document = served_document(service, tmp_path)
    published = ROOT / "contracts" / "openapi" / f"{service}.json"
    rendered = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if os.environ.get("MICROSHOP_UPDATE_CONTRACTS"):
        published.write_text(rendered)
    assert published.exists(), f"run with MICROSHOP_UPDATE_CONTRACTS=1 to publish {published.name}"
    assert published.read_text() == rendered, (
        f"{service}'s API changed: review it, then refresh with MICROSHOP_UPDATE_CONTRACTS=1"
    )
    assert document["paths"], service
