"""A loopback TCP forwarder: reach a real server under another address, to test host checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a connection until it ends, then close the writing side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tcp_forwarder(listen_host: str, target_host: str, target_port: int) -> AsyncIterator[int]:
    """Listen on ``listen_host`` (a free port, yielded) and forward to the target."""

    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(handle, listen_host, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


class SwitchableProxy:
    """A loopback TCP forwarder that can cut every connection and refuse new ones: the
    warehouse 'goes down' for one worker without stopping the shared PostgreSQL."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.down = False
        self.port = 0

    async def __aenter__(self) -> SwitchableProxy:
        self._server = await asyncio.start_server(self._handle, "localhost", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Down: close every open connection; new ones are closed at once."""
        self.down = True
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self.down = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        server_reader, server_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, server_writer}
        try:
            await asyncio.gather(pipe(reader, server_writer), pipe(server_reader, writer))
        finally:
            self._writers -= {writer, server_writer}
