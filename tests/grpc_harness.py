"""Runs an asyncio gRPC server on a background thread so tests can use plain blocking stubs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from server.app import ServerParts, create_server, shutdown


@contextmanager
def running_server(parts: ServerParts) -> Iterator[tuple[int, asyncio.AbstractEventLoop]]:
    """Start the server on a free port; yields ``(port, loop)`` and stops it afterwards."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        server, port, health = await create_server(parts, "127.0.0.1", 0)
        await server.start()
        holder.update(server=server, port=port, health=health)
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    ready.wait(10)
    try:
        yield int(holder["port"]), loop  # type: ignore[call-overload]
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(holder["server"], holder["health"], 1.0), loop).result(10)  # type: ignore[arg-type]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
