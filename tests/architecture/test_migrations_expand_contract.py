"""Rolling deploys run the old and the new version of a service against one database, and a
rollback runs the old code on the new schema (docs/operations.md, "Changing a schema while two
versions run"). So each migration says in its docstring whether it only expands the schema or
contracts it, and one that says expand may not drop, rename, retype or tighten anything."""

import ast
import re
from pathlib import Path

import pytest
from microshop_chassis.services import names, service

ROOT = Path(__file__).resolve().parents[2]

ROLLOUT_LINE = re.compile(r"^Rollout: (expand|contract \((?P<reason>.+)\))\.$", re.M)

# Operations that break the version still running: it reads what they remove or rename, or its
# writes no longer fit (a column it leaves empty made NOT NULL, a new type, a new constraint).
REMOVING_OR_RENAMING = {"drop_table", "drop_column", "rename_table"}
TIGHTENING = {"create_check_constraint", "create_unique_constraint", "create_foreign_key", "create_primary_key"}
# Raw SQL that does the same behind op.execute.
DESTRUCTIVE_SQL = re.compile(r"\b(DROP\s+(TABLE|COLUMN)|RENAME|SET\s+NOT\s+NULL|ALTER\s+COLUMN\s+\w+\s+TYPE)\b",
                             re.I)


def migration_files(service_name: str) -> list[Path]:
    spec = service(service_name)
    versions = ROOT / spec.folder / "src" / spec.package / "migrations" / "versions"
    return sorted(versions.glob("[0-9][0-9][0-9][0-9]_*.py"))


def rollout_problems(path: Path) -> list[str]:
    """What is wrong with a migration file's rollout: no `Rollout:` line, or an expand migration
    whose upgrade() does something only a contract may do."""
    module = ast.parse(path.read_text(), filename=str(path))
    docstring = ast.get_docstring(module) or ""
    declared = ROLLOUT_LINE.search(docstring)
    if declared is None:
        return [f"{path.name}: the docstring needs 'Rollout: expand.' or 'Rollout: contract (<what is dropped>).'"]
    if declared.group(1) != "expand":
        return []
    upgrade = next((node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "upgrade"),
                   None)
    if upgrade is None:
        return [f"{path.name}: no upgrade()"]
    strings = _module_strings(module)
    return [f"{path.name}:{call.lineno}: {reason} in a migration marked expand"
            for call in ast.walk(upgrade) if isinstance(call, ast.Call)
            for reason in [_contracting(call, strings)] if reason]


def _contracting(call: ast.Call, strings: dict[str, str]) -> str | None:
    if not isinstance(call.func, ast.Attribute):
        return None
    # op.x and batch.x (batch_alter_table) alike: the receiver's name does not matter.
    operation = call.func.attr
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    if operation in REMOVING_OR_RENAMING:
        return operation
    if operation in TIGHTENING:
        return f"{operation} (the previous version's writes may break it)"
    if operation == "alter_column":
        if "new_column_name" in keywords:
            return "alter_column(new_column_name=...) renames a column"
        if "type_" in keywords:
            return "alter_column(type_=...) changes a type in place"
        if _is_false(keywords.get("nullable")):
            return "alter_column(nullable=False)"
    if operation == "add_column":
        for column in (arg for arg in call.args if isinstance(arg, ast.Call)):
            column_keywords = {keyword.arg: keyword.value for keyword in column.keywords}
            if _is_false(column_keywords.get("nullable")) and "server_default" not in column_keywords:
                return "add_column NOT NULL without a server_default"
    if operation == "execute" and call.args:
        sql = call.args[0]
        text = sql.value if isinstance(sql, ast.Constant) else strings.get(getattr(sql, "id", ""), "")
        if isinstance(text, str) and DESTRUCTIVE_SQL.search(text):
            return f"op.execute of {DESTRUCTIVE_SQL.search(text).group(0)!r}"
    return None


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _module_strings(module: ast.Module) -> dict[str, str]:
    """Module-level SQL constants (BACKFILL = "UPDATE ..."), which op.execute is often given."""
    return {target.id: node.value.value for node in module.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for target in node.targets if isinstance(target, ast.Name)}


MIGRATIONS = [pytest.param(path, id=f"{name}/{path.name}")
              for name in names(storage="sql") for path in migration_files(name)]


def test_every_service_with_sql_storage_has_migrations_to_check():
    for name in names(storage="sql"):
        assert migration_files(name), f"{name}: no migration found"


@pytest.mark.parametrize("path", MIGRATIONS)
def test_each_migration_states_its_rollout_and_an_expand_one_removes_nothing(path):
    assert rollout_problems(path) == []


@pytest.mark.parametrize("path", [p for p in MIGRATIONS if p.values[0].name.startswith("0001_")])
def test_the_first_migration_of_a_service_is_an_expand(path):
    assert ROLLOUT_LINE.search(ast.get_docstring(ast.parse(path.read_text())) or "").group(1) == "expand"


# --- the checker itself, on migrations written for the occasion ----------------------------------

def write_migration(folder: Path, rollout: str, upgrade_body: str, preamble: str = "") -> Path:
    path = folder / "0009_example.py"
    body = "\n".join(f"    {line}" for line in upgrade_body.strip().splitlines())
    path.write_text(f'"""an example\n\n{rollout}\n"""\nimport sqlalchemy as sa\nfrom alembic import op\n'
                    f"{preamble}\n\ndef upgrade() -> None:\n{body}\n")
    return path


CONTRACTING = {
    "drop_column": 'op.drop_column("orders", "customer_email")',
    "batch drop_column": 'with op.batch_alter_table("orders") as batch_op:\n    batch_op.drop_column("customer_email")',
    "drop_table": 'op.drop_table("signing_keys")',
    "rename_table": 'op.rename_table("orders", "purchases")',
    "rename column": 'op.alter_column("orders", "customer_email", new_column_name="contact_email")',
    "set NOT NULL": 'op.alter_column("orders", "reason", nullable=False)',
    "retype": 'op.alter_column("orders", "total_cents", type_=sa.BigInteger())',
    "NOT NULL without default": 'op.add_column("orders", sa.Column("note", sa.Text, nullable=False))',
    "batch NOT NULL without default": 'with op.batch_alter_table("orders") as batch:\n'
                                      '    batch.add_column(sa.Column("note", sa.Text, nullable=False))',
    "new CHECK": 'with op.batch_alter_table("products") as batch:\n'
                 '    batch.create_check_constraint("ck_x", "on_hand >= 0")',
    "raw DROP COLUMN": 'op.execute("ALTER TABLE orders DROP COLUMN reason")',
}


@pytest.mark.parametrize("upgrade_body", CONTRACTING.values(), ids=CONTRACTING.keys())
def test_the_checker_flags_a_contracting_step_marked_expand(tmp_path, upgrade_body):
    path = write_migration(tmp_path, "Rollout: expand.", upgrade_body)
    assert len(rollout_problems(path)) == 1


@pytest.mark.parametrize("upgrade_body", CONTRACTING.values(), ids=CONTRACTING.keys())
def test_the_same_step_marked_contract_with_its_reason_passes(tmp_path, upgrade_body):
    path = write_migration(tmp_path, "Rollout: contract (what no running version reads any more).", upgrade_body)
    assert rollout_problems(path) == []


EXPANDING = {
    "new table": 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))',
    "nullable column": 'op.add_column("orders", sa.Column("contact_email", sa.String(320), nullable=True))',
    "NOT NULL with default": 'op.add_column("orders", sa.Column("n", sa.Integer, nullable=False, server_default="0"))',
    "index": 'op.create_index("ix_orders_status", "orders", ["status"])',
    "relax NOT NULL": 'op.alter_column("orders", "customer_email", nullable=True)',
    "backfill by a constant": "op.execute(BACKFILL)",
}


@pytest.mark.parametrize("upgrade_body", EXPANDING.values(), ids=EXPANDING.keys())
def test_the_checker_lets_an_expanding_step_pass(tmp_path, upgrade_body):
    preamble = '\nBACKFILL = "UPDATE orders SET contact_email = customer_email WHERE contact_email IS NULL"'
    path = write_migration(tmp_path, "Rollout: expand.", upgrade_body, preamble)
    assert rollout_problems(path) == []


def test_a_raw_sql_constant_that_drops_is_followed_to_its_text(tmp_path):
    path = write_migration(tmp_path, "Rollout: expand.", "op.execute(CLEANUP)",
                           '\nCLEANUP = "DROP TABLE signing_keys"')
    assert rollout_problems(path) != []


@pytest.mark.parametrize("rollout", ["", "Rollout: expanding.", "Rollout: contract.", "Rollout: contract ()."])
def test_a_missing_or_malformed_rollout_line_is_flagged(tmp_path, rollout):
    path = write_migration(tmp_path, rollout, 'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))')
    assert rollout_problems(path) != []
