"""Whether something already listens on an address, asked before a server that may share ports starts."""

from __future__ import annotations

import socket


def refuse_if_served(host: str, port: int) -> None:
    """OSError (EADDRINUSE, or why the address is not this host's) when ``host:port`` cannot be listened on.

    Binds a plain socket there and closes it: SO_REUSEADDR lets a past run's closing connections pass, and
    without SO_REUSEPORT the bind fails while anything listens, whatever that listener's options (gRPC and
    the collector's ingest processes bind with SO_REUSEPORT, and would otherwise share the port).
    """
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
