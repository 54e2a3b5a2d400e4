"""NATS for ``microshop up --nats-cluster``: three nats-server nodes on this machine, the streams
kept on all three (JetStream replicas), so losing one node loses no acknowledged event.

- Components ``nats``, ``nats-2``, ``nats-3``: client ports the NATS port and the next two,
  route (cluster) ports the three after (14222-14224 and 14225-14227 by default); each
  overridable with ``-p nats-2=...``, ``-p nats-cluster=...``, ``-p nats-2-cluster=...``.
- Each node has its own configuration file (``secrets/nats-<node>.conf``, 0600): the same users
  as the single node, its ``server_name`` and a ``cluster`` block whose routes authenticate
  (``broker_auth.ClusterNode`` says why), and its own store (``<data dir>/nats-cluster/<node>``).
  A single node's store is not carried over: nats-server does not turn a standalone server's
  streams into clustered ones, so the cluster keeps its history apart from the single node's.
- Services get every node's URL (``MICROSHOP_NATS_URL``, comma-separated; nats-py fails over) and
  ``MICROSHOP_NATS_STREAM_REPLICAS=3``. Before any service starts, the launcher ensures the
  streams with three replicas as the operator (``broker.prepare_streams``), changing a stream
  that has fewer: a service's own user may not.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from microshop_chassis.broker_auth import ClusterNode, server_config
from microshop_chassis.private_files import write_private_file

from .state import DataDir

if TYPE_CHECKING:
    from .components import Component
    from .system import SystemConfig

NODES = ("nats", "nats-2", "nats-3")
REPLICAS = len(NODES)


def route_port_name(node: str) -> str:
    return f"{node}-cluster"


# The ports the cluster adds to the single node's ``nats``.
PORT_NAMES = (*NODES[1:], *(route_port_name(node) for node in NODES))


def derived_ports(nats_port: int) -> dict[str, int]:
    """The other nodes' client ports follow the NATS port; the route ports follow those."""
    ports = {node: nats_port + index for index, node in enumerate(NODES)}
    ports.update({route_port_name(node): nats_port + len(NODES) + index for index, node in enumerate(NODES)})
    del ports["nats"]
    return ports


def client_urls(config: SystemConfig) -> list[str]:
    return [f"nats://{config.host}:{config.ports[node]}" for node in NODES]


def config_file(paths: DataDir, node: str) -> Path:
    return paths.secrets / f"{node}.conf"


def store_dir(paths: DataDir, node: str) -> Path:
    return paths.root / "nats-cluster" / node


def cluster_node(config: SystemConfig, node: str) -> ClusterNode:
    peers = tuple(config.ports[route_port_name(other)] for other in NODES if other != node)
    return ClusterNode(node, config.host, config.ports[route_port_name(node)], peers)


def write_configs(config: SystemConfig, passwords: dict[str, str]) -> None:
    """Each node's configuration file, 0600 (it holds every broker user's password)."""
    paths = DataDir(config.data_dir)
    for node in NODES:
        write_private_file(config_file(paths, node), server_config(passwords, node=cluster_node(config, node)))


def components(config: SystemConfig) -> list[Component]:
    from .components import Component, nats_server_binary

    paths, ports, host = DataDir(config.data_dir), config.ports, config.host
    return [
        Component(
            node,
            # The configuration holds the users and the cluster block; the flags win over it.
            [nats_server_binary(), "-c", str(config_file(paths, node)), "-a", host, "-p", str(ports[node]),
             "-js", "-sd", str(store_dir(paths, node))],
            ports[node], step=0, ready_path=None, health_path=None, scheme="nats", host=host,
            other_ports={"cluster": ports[route_port_name(node)]},
        )
        for node in NODES
    ]
