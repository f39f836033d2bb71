"""What an idle connection keeps (docs/performance.md, "RSS per connection").

The lean queue and event (sanic_rt/lean_asyncio.py), the node-wide ping timer
and the trimmed handshake state (sanic_rt/engineio_ws.py, sanic_rt/server.py,
sanic_rt/sio_server.py) rely on code in asyncio, python-engineio, uvicorn and
websockets. The fingerprint tests fail when that code changes: then re-read
it, port the change, and update the fingerprints. The asyncio ones are checked
by behaviour instead (the code differs between Python versions).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import inspect
from typing import Any

import pytest
import socketio
from engineio import async_server, async_socket, base_socket
from engineio import packet as eio_packet
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.server import ServerProtocol

from sanic_rt.engineio_ws import HANDSHAKE_ONLY
from sanic_rt.lean_asyncio import BACKLOG_TO_DEQUE, LeanEvent, LeanQueue, SmallDeque
from sanic_rt.server import WebSocketProtocol
from sanic_rt.testing import config_from_dict, running_app, token

SECRET = "m" * 32
#: sha256 prefixes of the upstream code relied on (python-engineio 4.15.1,
#: uvicorn 0.54.0, websockets 17.4)
UPSTREAM = {
    # PingTimer replaces the task _send_ping runs in, started by schedule_ping
    "AsyncSocket.schedule_ping": (async_socket.AsyncSocket.schedule_ping, "fe316639159cd70d"),
    "AsyncSocket._send_ping": (async_socket.AsyncSocket._send_ping, "67db82a704ea49d0"),
    "AsyncSocket.send": (async_socket.AsyncSocket.send, "0437276ccba7ab09"),
    "AsyncServer.start_background_task": (
        async_server.AsyncServer.start_background_task,
        "c873562535a68297",
    ),
    # the socket's queue comes from create_queue
    "BaseSocket.__init__": (base_socket.BaseSocket.__init__, "8532b631a4dc815f"),
    "AsyncServer.create_queue": (async_server.AsyncServer.create_queue, "5ff5673a0c017681"),
    # uvicorn builds queue and writable here, the scope's headers in handle_connect,
    # and reads request/response only in the handshake
    "WebSocketsSansIOProtocol.__init__": (WebSocketsSansIOProtocol.__init__, "631dcd744eab875f"),
    "WebSocketsSansIOProtocol.handle_connect": (
        WebSocketsSansIOProtocol.handle_connect,
        "fc648c2161ff8e13",
    ),
    "WebSocketsSansIOProtocol.send": (WebSocketsSansIOProtocol.send, "d4919ed760ce9f7b"),
    # the parser generator keeps the handshake Request in a local
    "ServerProtocol.parse": (ServerProtocol.parse, "8c4d10340de4d32f"),
}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_upstream_code_is_what_the_overrides_were_written_against(name: str) -> None:
    function, fingerprint = UPSTREAM[name]
    assert hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16] == fingerprint


def test_asyncio_keeps_its_waiters_and_items_where_the_lean_kinds_replace_them() -> None:
    # If asyncio renames or adds a container, LeanQueue/LeanEvent would silently
    # keep (or miss) a deque: these are the ones they replace.
    deques = {k for k, v in vars(asyncio.Queue()).items() if isinstance(v, collections.deque)}
    assert deques == {"_queue", "_getters", "_putters"}
    assert isinstance(asyncio.Queue()._finished, asyncio.Event)  # type: ignore[attr-defined]
    event_deques = [k for k, v in vars(asyncio.Event()).items() if isinstance(v, collections.deque)]
    assert event_deques == ["_waiters"]
    for lean in (LeanQueue(), LeanQueue(3), LeanEvent()):
        assert not any(isinstance(v, collections.deque) for v in vars(lean).values())
    assert isinstance(LeanQueue()._finished, LeanEvent)  # type: ignore[attr-defined]


async def test_lean_queue_and_event_behave_as_asyncio_s() -> None:
    queue: LeanQueue[int] = LeanQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert await getter == 1 and queue.qsize() == 1 and queue.get_nowait() == 2
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    # a cancelled getter leaves no waiter behind; the next one gets the item
    cancelled = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not queue._getters  # type: ignore[attr-defined]
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    await queue.put(3)
    assert await asyncio.wait_for(second, 5) == 3
    # task_done/join
    queue.task_done(), queue.task_done(), queue.task_done()
    await asyncio.wait_for(queue.join(), 5)
    # a bounded queue's putters wait, in order
    bounded: LeanQueue[int] = LeanQueue(1)
    bounded.put_nowait(0)
    putters = [asyncio.ensure_future(bounded.put(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    assert [await bounded.get() for _ in range(3)] == [0, 1, 2]
    await asyncio.gather(*putters)
    # events
    event = LeanEvent()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert len(event._waiters) == 3  # type: ignore[attr-defined]
    event.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True] * 3
    assert not event._waiters  # type: ignore[attr-defined]
    smaller = SmallDeque([1, 2])
    assert smaller.popleft() == 1 and smaller == [2]


def test_a_long_backlog_moves_to_a_real_deque_in_order() -> None:
    # popleft on a list is O(n): a slow reader's backlog must not cost quadratic time.
    queue: LeanQueue[int] = LeanQueue()
    for i in range(BACKLOG_TO_DEQUE):
        queue.put_nowait(i)
    assert type(queue._queue) is SmallDeque  # type: ignore[attr-defined]
    for i in range(BACKLOG_TO_DEQUE, 1000):
        queue.put_nowait(i)
    assert isinstance(queue._queue, collections.deque)  # type: ignore[attr-defined]
    assert [queue.get_nowait() for _ in range(1000)] == list(range(1000))


async def _poll(predicate: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


async def test_an_idle_connection_keeps_no_handshake_state_and_no_ping_task() -> None:
    config = config_from_dict(
        {"auth": {"secret": SECRET}, "server": {"ping_interval": 1, "ping_timeout": 5}}
    )
    async with running_app(config) as (app, url):
        sio = app.ctx.gateway.sio
        client = socketio.AsyncClient()
        await client.connect(
            f"{url}/?app=1",
            namespaces=["/chats"],
            auth={"token": token(config, "u")},
            transports=["websocket"],
            headers={"User-Agent": "conn-memory-test"},
        )
        try:
            (socket,) = sio.eio.sockets.values()
            assert isinstance(socket.queue, LeanQueue)
            gc.collect()  # earlier tests' protocols
            (protocol,) = [
                o for o in gc.get_objects() if type(o) is WebSocketProtocol and not o.disconnected
            ]
            assert isinstance(protocol.queue, LeanQueue)
            assert isinstance(protocol.writable, LeanEvent)
            assert protocol.request is None and protocol.response is None
            # websockets' parser still holds the Request: its headers are gone
            held = [o for o in gc.get_objects() if type(o) is Headers and "Sec-WebSocket-Key" in o]
            assert held == []
            environ = sio.get_environ(client.get_sid("/chats"), "/chats")
            assert environ["asgi.scope"]["headers"] == []
            assert not set(HANDSHAKE_ONLY) & set(environ)
            # what plugins and python-socketio's Admin UI read is still there
            assert environ["HTTP_USER_AGENT"] == "conn-memory-test"
            assert "app=1" in environ["QUERY_STRING"] and environ["REMOTE_ADDR"]
            # pings go out, from no task per socket, and the client stays. Counted
            # as they are queued: last_ping is set only until the PONG, which an
            # in-process client sends within the same few loop turns (sampling it
            # every 20 ms missed most PINGs).
            pings: list[Any] = []
            put_nowait = socket.queue.put_nowait

            def recording(item: Any) -> None:
                if item is not None and item.packet_type == eio_packet.PING:
                    pings.append(item)
                put_nowait(item)

            socket.queue.put_nowait = recording
            await _poll(lambda: len(pings) >= 2, "no two PINGs within 10 s at ping_interval 1")
            running = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]
            assert not [name for name in running if "_send_ping" in name], running
            assert client.connected and socket in sio.eio.sockets.values()
            assert (await client.call("ping", {}, namespace="/chats", timeout=10))["ok"]
        finally:
            await client.disconnect()
