"""`onward serve` accepts waiting connections in bursts (libuv alone takes one per loop turn)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

import pytest
import uvloop

from onward import server
from onward.server import ACCEPT_BURST, _Acceptor


class _Echo(asyncio.Protocol):
    made: list[_Echo] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()
        _Echo.made.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)

    @classmethod
    async def close_all(cls) -> None:
        """Close the server side of every connection made, and wait until each is gone."""
        for echo in cls.made:
            echo.transport.close()
        await asyncio.gather(*(echo.lost for echo in cls.made))
        cls.made.clear()

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[attr-defined]


async def _clients(port: int, n: int) -> list[bytes]:
    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"hello {i}".encode())
        answer = await reader.read(100)
        writer.close()
        return answer

    return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"])
def test_waiting_connections_are_accepted_in_bursts_and_served(
    loop_factory: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns: list[int] = []
    original = socket.socket.accept

    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        port = listener.getsockname()[1]
        n = ACCEPT_BURST * 3
        # every client connects (the kernel completes the handshake) before the acceptor runs
        connected = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        accepted = 0

        def counting_accept(sock: socket.socket) -> tuple[socket.socket, object]:
            nonlocal accepted
            conn = original(sock)
            accepted += 1
            return conn

        monkeypatch.setattr(socket.socket, "accept", counting_accept)
        original_accept = _Acceptor._accept

        def one_turn(self: _Acceptor) -> None:
            before = accepted
            original_accept(self)
            turns.append(accepted - before)

        monkeypatch.setattr(_Acceptor, "_accept", one_turn)
        acceptor = _Acceptor(listener, _Echo)
        try:
            for sock in connected:
                sock.sendall(b"ping")
            answers = await asyncio.gather(*(asyncio.to_thread(sock.recv, 100) for sock in connected))
            assert answers == [b"PING"] * n
            assert accepted == n
            assert await _clients(port, 20) == [f"HELLO {i}".encode() for i in range(20)]
        finally:
            acceptor.close()
            for sock in connected:
                sock.close()
            listener.close()
            await _Echo.close_all()

    loop = loop_factory()  # type: ignore[operator]
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert max(turns) == ACCEPT_BURST  # a full burst in one turn, not one connection per turn


async def test_out_of_file_descriptors_pauses_the_acceptor_then_it_serves_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server, "ACCEPT_PAUSE_S", 0.05)
    original = socket.socket.accept
    failures = [OSError(errno.EMFILE, "Too many open files")]  # the kernel's answer, once

    def accept(sock: socket.socket) -> tuple[socket.socket, object]:
        if failures:
            raise failures.pop()
        return original(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    acceptor = _Acceptor(listener, _Echo)
    try:
        with caplog.at_level(logging.WARNING, logger="onward.server"):
            assert await _clients(listener.getsockname()[1], 3) == [b"HELLO 0", b"HELLO 1", b"HELLO 2"]
        assert "pausing the burst acceptor" in caplog.text and not failures
    finally:
        acceptor.close()
        listener.close()
        await _Echo.close_all()
