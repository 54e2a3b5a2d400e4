"""Test tiers across the repository: the fast tests are those in a ``tests/unit`` folder (domain
rules, and each service's use cases against in-memory fakes); ``make test-fast`` runs only them
(they are marked ``unit``, so ``pytest -m unit`` selects them too). Everything else runs real
processes, brokers and databases."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/unit/" in item.path.as_posix():
            item.add_marker(pytest.mark.unit)
