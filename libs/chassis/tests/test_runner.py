"""The server process's collector tuning (runner.tune_garbage_collection), in a fresh interpreter:
the collector's settings belong to the process, so the test's own are left alone."""

from __future__ import annotations

import json
import subprocess
import sys

from microshop_chassis.runner import GC_THRESHOLDS

SCRIPT = """
import gc, json
import microshop_chassis.host  # what a service has imported before it serves
before = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
from microshop_chassis.runner import tune_garbage_collection
tune_garbage_collection()
print(json.dumps({"before": before, "after": {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}}))
"""


def test_a_server_process_freezes_what_it_imported_and_collects_young_objects_less_often():
    found = json.loads(subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                                      check=True, timeout=60).stdout)
    assert found["before"]["frozen"] == 0 and tuple(found["before"]["threshold"]) != GC_THRESHOLDS
    assert tuple(found["after"]["threshold"]) == GC_THRESHOLDS
    # Everything imported so far (the chassis, FastAPI, SQLAlchemy...): tens of thousands of objects.
    assert found["after"]["frozen"] > 10_000, found
