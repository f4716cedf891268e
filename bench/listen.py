"""How the bench's own servers (the pacer, the relay) listen: one socket, a protocol per connection,
the base URL printed on stdout's first line (what `harness.LlmProcess` waits for), until SIGINT or
SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable


async def serve_until_stopped(protocol: Callable[[], asyncio.Protocol], host: str, port: int, path: str = "") -> None:
    """Serve `protocol` on host:port (0: any free port), print `http://host:port{path}`, run until
    SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY by asyncio
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = await loop.create_server(protocol, sock=sock, backlog=4096)
    print(f"http://{host}:{sock.getsockname()[1]}{path}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
