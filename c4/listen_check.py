"""Whether something already listens on an address, asked before a server that may share ports starts."""

from __future__ import annotations

import socket


def bound_socket(host: str, port: int, option: int) -> socket.socket:
    """A TCP socket bound (not listening) on ``host:port`` with socket ``option`` (SO_REUSEADDR, SO_REUSEPORT)
    set; OSError when the address cannot be bound."""
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def refuse_if_served(host: str, port: int) -> None:
    """OSError (EADDRINUSE, or why the address is not this host's) when ``host:port`` cannot be listened on.

    Binds a plain socket there and closes it: SO_REUSEADDR lets a past run's closing connections pass, and
    without SO_REUSEPORT the bind fails while anything listens, whatever that listener's options (gRPC and
    the collector's ingest processes bind with SO_REUSEPORT, and would otherwise share the port).
    """
    bound_socket(host, port, socket.SO_REUSEADDR).close()
