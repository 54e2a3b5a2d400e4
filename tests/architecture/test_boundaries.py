"""The architecture's rules, checked on the source tree: each service is a self-contained package,
imports no other service, touches no other service's database, and is listed once in the one list
of services (microshop_chassis.services)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from microshop_chassis.services import SERVICES as SERVICE_LIST
from microshop_chassis.services import importlinter_config, names

ROOT = Path(__file__).resolve().parents[2]
SERVICES = list(names())
RELATIONAL = list(names(storage="sql"))


def test_every_service_folder_is_in_the_list_and_every_entry_has_its_folder():
    folders = {path.parent.name for path in (ROOT / "services").glob("*/pyproject.toml")}
    assert folders == set(SERVICES)
    for spec in SERVICE_LIST:
        assert (ROOT / spec.folder / "src" / spec.package).is_dir(), spec


def test_the_list_gives_each_service_its_own_port_and_gateway_prefix():
    ports = [spec.port for spec in SERVICE_LIST]
    assert len(set(ports)) == len(ports)
    prefixes = [spec.gateway_prefix for spec in SERVICE_LIST if spec.gateway_prefix]
    assert len(set(prefixes)) == len(prefixes)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_a_self_contained_package(service):
    folder = ROOT / "services" / service
    for part in ("pyproject.toml", "Dockerfile", "README.md", "tests", f"src/microshop_{service}/__main__.py",
                 f"src/microshop_{service}/bootstrap.py"):
        assert (folder / part).exists(), f"services/{service} lacks {part}"
    if service in RELATIONAL:
        versions = folder / "src" / f"microshop_{service}" / "migrations" / "versions"
        assert list(versions.glob("0001_*.py")), f"{service} keeps relational data but has no Alembic migration"


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_names_another_services_database(service):
    others = [s for s in SERVICES if s != service]
    pattern = re.compile(
        "|".join(rf"MICROSHOP_{o.upper()}_DATABASE_URL|\b{o}\.db\b|\b{o}\.duckdb\b" for o in others)
    )
    offending = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in (ROOT / "services" / service / "src").rglob("*.py")
        for match in pattern.finditer(path.read_text())
    ]
    assert offending == []


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_reaches_into_app_state(service):
    """Routes receive what they need as typed dependencies (provide.py), not from a locator."""
    offending = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "services" / service / "src").rglob("*.py")
        if "app.state" in path.read_text()
    ]
    assert offending == []


def test_import_boundaries_hold(tmp_path):
    """import-linter's contracts, written from the list of services: services independent,
    chassis, launcher and simulators below them."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed (make install)"
    config = tmp_path / "importlinter.ini"
    config.write_text(importlinter_config())
    result = subprocess.run([lint_imports, str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")
    for spec in SERVICE_LIST:
        assert spec.package in config.read_text()


@pytest.mark.parametrize("service", RELATIONAL)
def test_migrations_are_numbered_in_one_line(service):
    """Database.migrate knows the newest revision from the file names (to skip Alembic at start
    when the schema is current), so each file NNNN_*.py must hold revision "NNNN" and follow the
    one before it."""
    versions = ROOT / "services" / service / "src" / f"microshop_{service}" / "migrations" / "versions"
    files = sorted(versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
    previous = None
    for path in files:
        text = path.read_text()
        number = path.name[:4]
        assert re.search(rf'^revision = "{number}"$', text, re.M), f"{path.name}: revision must be {number!r}"
        expected_down = "None" if previous is None else f'"{previous}"'
        assert re.search(rf"^down_revision = {expected_down}$", text, re.M), f"{path.name}: down_revision"
        previous = number
    assert files, f"{service} has no migrations"
