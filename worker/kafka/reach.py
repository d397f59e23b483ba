"""Whether a broker answers: the clients' own connections, and a TCP probe of the bootstrap list.

kafka-python retries silently while no broker answers (its consumer's poll simply returns
nothing), so the worker asks its clients directly: a client that holds an initialised
connection to some broker is talking to the cluster. A broker that vanishes (reset, refused,
gone) closes those connections at once; one that hangs is noticed when its requests time out.

Reads kafka-python 3.0 internals (`_manager._conns`); on anything unexpected the answer is
"reachable", so a library change can never make a healthy worker report an outage.
"""

from __future__ import annotations

import socket
from typing import Any


def _manager(client: Any) -> Any:
    manager = getattr(client, "_manager", None)  # KafkaConsumer
    if manager is None:  # KafkaProducer: its sender's network client
        network = getattr(getattr(client, "_sender", None), "_client", None)
        manager = getattr(network, "_manager", None)
    return manager


def any_connected(*clients: Any) -> bool:
    """True when one of `clients` holds an initialised connection to a broker."""
    known = False
    for client in clients:
        manager = _manager(client)
        conns = getattr(manager, "_conns", None)
        if not isinstance(conns, dict):
            continue
        known = True
        if any(getattr(conn, "connected", False) for conn in list(conns.values())):
            return True
    return not known


def addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap_servers.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host:  # "host" alone: Kafka's default port
            host, port = item, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def silent(bootstrap_servers: str, timeout_s: float = 1.0) -> list[str]:
    """The bootstrap addresses that do not accept a TCP connection within `timeout_s`."""
    quiet = []
    for host, port in addresses(bootstrap_servers):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except (OSError, ValueError):
            quiet.append(f"{host}:{port}")
    return quiet
