"""The real component definitions on the parts of microshop that exist: NATS, both simulators and
users, wired only through the environment the launcher gives them. (The lead's whole-system test
covers all of it, seeding included.)"""

import asyncio
import importlib.util
import json
import subprocess
import sys
import time

import aiohttp
import pytest
from cli_dummies import cli_env, merging_pages, process_gone
from microshop_cli.bench_proc import pss_mb
from microshop_cli.components import default_components
from microshop_cli.system import System, SystemConfig

PARTS = ("nats", "mail-catcher", "card-processor", "users")
MODULES = ("microshop_mail_catcher", "microshop_card_processor", "microshop_users")

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(module) is None for module in MODULES), reason="a component is not installed")


def existing_parts(config):
    return [component for component in default_components(config) if component.name in PARTS]


async def test_nats_simulators_and_users_start_get_ready_and_stop(tmp_path):
    # --merge-pages here (the other tests start without it): the forked components inherit it.
    config = SystemConfig.with_free_ports(tmp_path / "data", components=existing_parts, merge_pages=True)
    began = time.monotonic()
    async with System(config) as system:
        ready_after = time.monotonic() - began
        assert system.names == list(PARTS)
        pids = {name: system.pid(name) for name in PARTS}

        # users reached /ready, so it reached the NATS we started; it created the admin we configured.
        async with aiohttp.ClientSession() as session:
            login = {"email": system.admin_email, "password": system.admin_password}
            async with session.post(system.url("users") + "/login", json=login) as reply:
                assert reply.status == 200, await reply.text()
                assert "access_token" in await reply.json()

        status = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "microshop_cli.main", "status", "--json", "--data-dir", str(config.data_dir),
            stdout=subprocess.PIPE, env=cli_env())
        report = json.loads((await asyncio.wait_for(status.communicate(), 30))[0])
        assert status.returncode == 0
        by_name = {component["name"]: component for component in report["components"]}
        assert all(by_name[name]["health"] == "ok" for name in PARTS)
        assert by_name["nats"]["version"].startswith("2.")  # from the NATS greeting
        assert by_name["users"]["version"] and by_name["mail-catcher"]["version"]
        # Memory: each component's PSS, the fork server's (what the forked ones share), the sum.
        assert all(by_name[name]["pss_mb"] > 1 for name in PARTS)
        assert report["fork_server"]["pid"] == system.fork_server_pid
        # its own pages only: its children are the components, each counted as itself
        assert report["fork_server"]["pss_mb"] == pytest.approx(pss_mb(system.fork_server_pid), abs=2)
        assert report["pss_mb_total"] == pytest.approx(
            sum(by_name[name]["pss_mb"] for name in PARTS) + report["fork_server"]["pss_mb"], abs=0.2)
        assert report["merge_pages"] is True
        assert merging_pages(pids["users"]) and merging_pages(system.fork_server_pid)
        assert not merging_pages(pids["nats"])  # not forked: started on its own

    assert all(process_gone(pid) for pid in pids.values())
    assert (config.data_dir / "users.db").exists() and (config.data_dir / "mail.db").exists()
    assert (config.data_dir / "nats").is_dir()
    print(f"nats + simulators + users ready in {ready_after:.2f} s")
