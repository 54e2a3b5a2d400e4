"""The architecture's rules, checked on the source tree: each service is a self-contained package,
imports no other service, and touches no other service's database."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["users", "inventory", "orders", "payments", "notifications", "reports", "gateway"]
RELATIONAL = ["users", "inventory", "orders", "payments", "notifications"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_a_self_contained_package(service):
    folder = ROOT / "services" / service
    for part in ("pyproject.toml", "Dockerfile", "README.md", "tests", f"src/microshop_{service}/__main__.py"):
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


def test_import_boundaries_hold():
    """import-linter's contracts (.importlinter): services independent, chassis below them."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed (make install)"
    result = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


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
