"""`microshop up --nats-cluster`: three NATS nodes, their ports and configuration files, the streams
kept three times before any service starts, services given every node (issue 9, item 6)."""

from __future__ import annotations

import json
import stat

import aiohttp
import nats
from microshop_chassis.broker import server_urls
from microshop_chassis.events import DEAD_LETTER_STREAM, STREAM
from microshop_chassis.testing import wait_until
from microshop_cli import nats_cluster
from microshop_cli.components import default_components, process_env
from microshop_cli.state import DataDir
from microshop_cli.status import check_all
from microshop_cli.system import System, SystemConfig


def only(*names: str):
    def factory(config):
        return [component for component in default_components(config) if component.name in names]
    return factory


def test_the_nodes_take_the_nats_port_and_the_next_ones_each_with_a_route_port(tmp_path):
    config = SystemConfig(data_dir=tmp_path, ports={"nats": 20000}, nats_cluster=True)
    nodes = [component for component in default_components(config) if component.scheme == "nats"]

    assert [(node.name, node.port, node.other_ports) for node in nodes] == [
        ("nats", 20000, {"cluster": 20003}), ("nats-2", 20001, {"cluster": 20004}),
        ("nats-3", 20002, {"cluster": 20005})]
    assert all(node.step == 0 for node in nodes)
    # A store each, apart from the single node's <data dir>/nats (its streams would not join a cluster).
    assert [node.command[node.command.index("-sd") + 1] for node in nodes] == [
        str(tmp_path / "nats-cluster" / name) for name in nats_cluster.NODES]


def test_services_get_every_node_and_three_replicas_and_a_single_node_stays_as_it_was(tmp_path):
    cluster = SystemConfig(data_dir=tmp_path, ports={"nats": 20000}, nats_cluster=True)
    single = SystemConfig(data_dir=tmp_path, ports={"nats": 20000})

    env = process_env(cluster, "secret")
    assert env["MICROSHOP_NATS_URL"] == "nats://127.0.0.1:20000,nats://127.0.0.1:20001,nats://127.0.0.1:20002"
    assert env["MICROSHOP_NATS_STREAM_REPLICAS"] == "3"
    env = process_env(single, "secret")
    assert (env["MICROSHOP_NATS_URL"], env["MICROSHOP_NATS_STREAM_REPLICAS"]) == ("nats://127.0.0.1:20000", "1")
    assert [c.name for c in default_components(single) if c.scheme == "nats"] == ["nats"]


async def test_up_with_a_cluster_keeps_the_streams_three_times_and_a_service_survives_a_node_kill(tmp_path):
    config = SystemConfig.with_free_ports(tmp_path / "data", seed=False, nats_cluster=True,
                                          components=only(*nats_cluster.NODES, "orders"))
    async with System(config) as system:
        paths = DataDir(config.data_dir)
        for node in nats_cluster.NODES:
            file = nats_cluster.config_file(paths, node)
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
            text = file.read_text()
            assert f'server_name: "{node}"' in text and '"user": "route"' in text  # routes authenticate

        nc = await nats.connect(server_urls(system.broker_url))
        try:
            js = nc.jetstream(timeout=5)
            for stream in (STREAM, DEAD_LETTER_STREAM):
                assert (await js.stream_info(stream)).config.num_replicas == 3
            state = system.state()
            statuses = await check_all(state["processes"])
            assert {(s.name, s.health) for s in statuses} >= {(node, "ok") for node in nats_cluster.NODES}

            leader = (await js.stream_info(STREAM)).cluster.leader
            system.kill(leader)
            await system.wait_ready(leader, timeout=30)  # the supervisor restarts it on its store

            async def back_in_the_cluster() -> bool:
                try:
                    info = await js.stream_info(STREAM)
                except nats.errors.Error:  # no answer while the survivors elect a new stream leader
                    return False
                return info.cluster.leader is not None and all(peer.current for peer in info.cluster.replicas)

            await wait_until(back_in_the_cluster, timeout=30, what="the restarted node caught up")
        finally:
            await nc.close()

        async with aiohttp.ClientSession() as session, session.get(system.url("orders") + "/ready") as reply:
            assert reply.status == 200, await reply.text()
        log = paths.log_file("orders").read_text()
        assert "stream_replicas_mismatch" not in log
        assert json.dumps("broker_connected")[1:-1] in log
