"""Ports for the local stack's processes: distinct, and free when handed out."""

from __future__ import annotations

import socket

from common.localstack.embedded import free_ports


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
