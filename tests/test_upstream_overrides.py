"""The upstream code our overrides of private internals rely on, checked against the installed one.

The one place for these checks. sanic-rt extends private methods of
python-socketio (sanic_rt/sio_server.py: GatewayServer, GatewayPacket;
sanic_rt/stream_manager.py and sanic_rt/recovery.py: the managers), replaces
python-engineio's websocket loop and ping task and its socket queue
(sanic_rt/engineio_ws.py), subclasses uvicorn's websocket protocol
(sanic_rt/server.py: WebSocketProtocol, with sanic_rt/lean_asyncio.py's queue
and event), reads a Sanic blueprint's pending routes
(sanic_rt/plugin_manager.py) and adds into a prometheus-client histogram's
private values (sanic_rt/metrics.py: PendingHistogram). Behaviour tests
elsewhere show the overrides work today; these fail when a new upstream release
changes what they rely on. Three kinds of check, the first that fits:

- behaviour: the attribute exists and holds what we expect after a real handshake;
- lines: the upstream lines relied on are there, whitespace removed (code we hook into);
- fingerprints: a hash of the whole upstream function (code we replace outright,
  where any change may need porting).

Each failure names the upstream file and function and what to re-verify; after
re-verifying (and porting the change to the override, and to docs/upstream/),
update the check. asyncio's queue and event (sanic_rt/lean_asyncio.py) differ
between Python versions and are checked by behaviour in tests/test_conn_memory.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import socketio
import uvicorn
from engineio import async_server, async_socket, base_socket
from engineio.async_drivers import asgi as eio_asgi
from prometheus_client import CollectorRegistry, Histogram
from sanic import Blueprint
from sanic.response import text
from socketio import packet
from socketio.async_pubsub_manager import AsyncPubSubManager
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from sanic_rt.app import create_app
from sanic_rt.metrics import PendingHistogram
from sanic_rt.plugin_manager import PluginHost
from sanic_rt.server import WebSocketProtocol, uvicorn_config
from sanic_rt.sio_server import GatewayPacket, GatewayServer, MalformedPacket
from sanic_rt.testing import LOOPBACK, config_from_dict, inline_plugin, token
from tests.support.clients import OVERSIZED_HEADER_HANDSHAKE, eventually

SECRET = "u" * 32
SIO = "python-socketio socketio/async_server.py AsyncServer"


def squeezed(function: Callable[..., Any]) -> str:
    """The function's source without whitespace, so reformatting upstream does not count."""
    return re.sub(r"\s+", "", inspect.getsource(function))


# --- python-socketio: what GatewayServer (sanic_rt/sio_server.py) hooks into -----------

#: (upstream function, where it is, the lines relied on, what to re-verify if they changed)
SOCKETIO_LINES: dict[str, tuple[Callable[..., Any], str, tuple[str, ...], str]] = {
    "_handle_eio_connect keeps the environ it is given": (
        socketio.AsyncServer._handle_eio_connect,
        f"{SIO}._handle_eio_connect",
        ("self.environ[eio_sid]=environ",),
        "GatewayServer._handle_eio_connect drops wsgi.input from that very dict before "
        "super() keeps it for the connection's life; re-verify it is still the dict kept",
    ),
    "_handle_eio_message builds the packet and dispatches EVENT and DISCONNECT": (
        socketio.AsyncServer._handle_eio_message,
        f"{SIO}._handle_eio_message",
        (
            "self._binary_packet[eio_sid]=pkt",
            "pkt=self.packet_class(encoded_packet=data)",
            "awaitself._handle_event(eio_sid,pkt.namespace,pkt.id,pkt.data)",
            "awaitself._handle_disconnect(eio_sid,pkt.namespace,self.reason.CLIENT_DISCONNECT)",
        ),
        "GatewayServer._handle_eio_message refuses binary frames before they are buffered "
        "and catches GatewayPacket's MalformedPacket raised from this packet_class call; "
        "GatewayServer._handle_event/_handle_disconnect must still be reached from here",
    ),
    "_handle_event reads data[0] as the event name": (
        socketio.AsyncServer._handle_event,
        f"{SIO}._handle_event",
        ("data[0]", "self._handle_event_internal"),
        "GatewayServer._handle_event answers a payload that is not a list starting with a "
        "string before upstream indexes it; re-verify what upstream now accepts",
    ),
    "_handle_event_internal dispatches through _trigger_event and acks via _send_packet": (
        socketio.AsyncServer._handle_event_internal,
        f"{SIO}._handle_event_internal",
        (
            "awaitserver._trigger_event(data[0],namespace,sid,*data[1:])",
            "awaitserver._send_packet(eio_sid,self.packet_class(packet.ACK,",
        ),
        "GatewayServer._trigger_event counts every event here (metrics); "
        "GatewayServer._send_packet sees every ack",
    ),
    "_handle_connect triggers connect and answers through _send_packet": (
        socketio.AsyncServer._handle_connect,
        f"{SIO}._handle_connect",
        (
            "awaitself._trigger_event('connect',namespace,sid,self.environ[eio_sid],data)",
            "exceptexceptions.ConnectionRefusedErrorasexc:",
            "self._send_packet(eio_sid,self.packet_class(packet.CONNECT,{'sid':sid},"
            "namespace=namespace))",
        ),
        "GatewayServer._count_connect re-raises ConnectionRefusedError for upstream to answer; "
        "GatewayServer._send_packet adds the recovery pid to this {'sid': sid} answer",
    ),
    "_handle_disconnect triggers disconnect": (
        socketio.AsyncServer._handle_disconnect,
        f"{SIO}._handle_disconnect",
        ("awaitself._trigger_event('disconnect',namespace,sid,",),
        "GatewayServer._trigger_event counts disconnects here; GatewayServer._handle_disconnect "
        "re-arms the connect deadline after super()",
    ),
    "_handle_eio_disconnect disconnects every namespace, then forgets the environ": (
        socketio.AsyncServer._handle_eio_disconnect,
        f"{SIO}._handle_eio_disconnect",
        ("awaitself._handle_disconnect(eio_sid,n,reason)", "delself.environ[eio_sid]"),
        "GatewayServer._handle_eio_disconnect runs after this and then wakes a pending "
        "long-poll GET; GatewayServer._handle_disconnect must still be called per namespace",
    ),
    "_send_packet encodes and sends through Engine.IO": (
        socketio.AsyncServer._send_packet,
        f"{SIO}._send_packet",
        ("encoded_packet=pkt.encode()", "awaitself.eio.send(eio_sid,encoded_packet)"),
        "GatewayServer._send_packet may replace pkt.data before super() encodes it",
    ),
    "a None in AsyncSocket.queue ends a pending long-poll": (
        async_socket.AsyncSocket.poll,
        "python-engineio engineio/async_socket.py AsyncSocket.poll",
        ("ifpackets==[None]:return[]",),
        "GatewayServer._handle_eio_disconnect and close_session put None in socket.queue to "
        "answer a pending GET (tests/test_transports.py::test_polling_disconnect_is_prompt)",
    ),
    "Packet.__init__ sets the header before it decodes": (
        packet.Packet.__init__,
        "python-socketio socketio/packet.py Packet.__init__",
        ("self.id=id", "self.attachment_count=self.decode(encoded_packet)or0"),
        "GatewayPacket.decode reads self.id (and packet_type, namespace) when the payload "
        "fails; re-verify they are set before decode runs",
    ),
    "Packet.decode parses the header before the JSON payload": (
        packet.Packet.decode,
        "python-socketio socketio/packet.py Packet.decode",
        ("self.packet_type=int(ep[0:1])", "self.id=int(ep[:i])", "self.data=self.json.loads(ep)"),
        "GatewayPacket.decode turns a ValueError/RecursionError from the payload into "
        "MalformedPacket naming type, namespace and ack id",
    ),
    "AsyncPubSubManager.emit builds the message, delivers locally, then publishes": (
        AsyncPubSubManager.emit,
        "python-socketio socketio/async_pubsub_manager.py AsyncPubSubManager.emit",
        (
            "message={'method':'emit','event':event,'data':data,'binary':binary,"
            "'namespace':namespace,'room':room,'skip_sid':skip_sid,'callback':callback,"
            "'host_id':self.host_id}",
            "awaitself._handle_emit(message)#handleinthishostawaitself._publish(message)",
        ),
        "StreamManager.emit (sanic_rt/stream_manager.py) builds the same message but "
        "publishes before it delivers locally",
    ),
    "AsyncManager.emit sends to every participant's eio sid": (
        socketio.AsyncManager.emit,
        "python-socketio socketio/async_manager.py AsyncManager.emit",
        (
            "forsid,eio_sidinself.get_participants(namespace,room):",
            "self.server._send_eio_packet(eio_sid,p)",
        ),
        "Recovery.deliver (sanic_rt/recovery.py) is this emit with one more argument "
        "for opted-in sids",
    ),
}


@pytest.mark.parametrize("relied_on", sorted(SOCKETIO_LINES))
def test_the_socketio_lines_our_overrides_rely_on_are_there(relied_on: str) -> None:
    function, where, lines, reverify = SOCKETIO_LINES[relied_on]
    source = squeezed(function)
    missing = [line for line in lines if line not in source]
    assert not missing, f"{where} changed ({relied_on}): {missing} not found. Re-verify: {reverify}"


# --- fingerprints: upstream code replaced outright -------------------------------------

#: (upstream function, sha256 prefix of its source, the override to re-verify); taken from
#: python-engineio 4.15.1, python-socketio 5.18.1, uvicorn 0.54.0, websockets 17.4
FINGERPRINTS: dict[str, tuple[Callable[..., Any], str, str]] = {
    # python-engineio's per-packet reader and writer, replaced by sanic_rt/engineio_ws.py
    # (and docs/upstream/python-engineio-websocket-loop.patch)
    "AsyncSocket._websocket_handler": (
        async_socket.AsyncSocket._websocket_handler,
        "27f120df4d717a24",
        "serve_websocket (sanic_rt/engineio_ws.py)",
    ),
    "AsyncSocket.poll": (
        async_socket.AsyncSocket.poll,
        "826f58a9f3606db2",
        "_write_loop (sanic_rt/engineio_ws.py)",
    ),
    # hooked into: the driver is built with the socket's bound _websocket_handler
    "AsyncSocket._upgrade_websocket": (
        async_socket.AsyncSocket._upgrade_websocket,
        "820b83efe96adb98",
        "LeanWebSocket (sanic_rt/engineio_ws.py)",
    ),
    "WebSocket.__call__": (
        eio_asgi.WebSocket.__call__,
        "abbf7a49b2256d37",
        "LeanWebSocket.__call__ (sanic_rt/engineio_ws.py)",
    ),
    "WebSocket.wait": (
        eio_asgi.WebSocket.wait,
        "0346a1c9ebdafdff",
        "serve_websocket (sanic_rt/engineio_ws.py)",
    ),
    "WebSocket.send": (
        eio_asgi.WebSocket.send,
        "0af97629973f3c51",
        "serve_websocket (sanic_rt/engineio_ws.py)",
    ),
    "AsyncServer._engineio_server_class": (
        socketio.AsyncServer._engineio_server_class,
        "199c42bf149247e0",
        "GatewayEngineIOServer (sanic_rt/engineio_ws.py)",
    ),
    # PingTimer replaces the task _send_ping runs in, started by schedule_ping
    "AsyncSocket.schedule_ping": (
        async_socket.AsyncSocket.schedule_ping,
        "fe316639159cd70d",
        "PingTimer (sanic_rt/engineio_ws.py)",
    ),
    "AsyncSocket._send_ping": (
        async_socket.AsyncSocket._send_ping,
        "67db82a704ea49d0",
        "PingTimer._fire (sanic_rt/engineio_ws.py)",
    ),
    "AsyncSocket.send": (
        async_socket.AsyncSocket.send,
        "0437276ccba7ab09",
        "PingTimer._fire (sanic_rt/engineio_ws.py)",
    ),
    "AsyncServer.start_background_task": (
        async_server.AsyncServer.start_background_task,
        "c873562535a68297",
        "GatewayEngineIOServer.start_background_task (sanic_rt/engineio_ws.py)",
    ),
    # the socket's queue comes from create_queue
    "BaseSocket.__init__": (
        base_socket.BaseSocket.__init__,
        "8532b631a4dc815f",
        "GatewayEngineIOServer.create_queue (sanic_rt/engineio_ws.py)",
    ),
    "AsyncServer.create_queue": (
        async_server.AsyncServer.create_queue,
        "5ff5673a0c017681",
        "GatewayEngineIOServer.create_queue (sanic_rt/engineio_ws.py)",
    ),
    # uvicorn builds queue and writable here, the scope's headers in handle_connect,
    # and reads request/response only in the handshake
    "WebSocketsSansIOProtocol.__init__": (
        WebSocketsSansIOProtocol.__init__,
        "631dcd744eab875f",
        "WebSocketProtocol.__init__ (sanic_rt/server.py)",
    ),
    "WebSocketsSansIOProtocol.handle_connect": (
        WebSocketsSansIOProtocol.handle_connect,
        "fc648c2161ff8e13",
        "drop_scope_headers (sanic_rt/sio_server.py), WebSocketProtocol (sanic_rt/server.py)",
    ),
    "WebSocketsSansIOProtocol.send": (
        WebSocketsSansIOProtocol.send,
        "d4919ed760ce9f7b",
        "WebSocketProtocol.send (sanic_rt/server.py)",
    ),
    # the parser generator keeps the handshake Request in a local
    "ServerProtocol.parse": (
        ServerProtocol.parse,
        "8c4d10340de4d32f",
        "WebSocketProtocol.send's drop_handshake_headers (sanic_rt/server.py)",
    ),
}


@pytest.mark.parametrize("name", sorted(FINGERPRINTS))
def test_the_upstream_code_our_overrides_replace_is_unchanged(name: str) -> None:
    function, fingerprint, override = FINGERPRINTS[name]
    found = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
    assert found == fingerprint, (
        f"{function.__module__}.{function.__qualname__} changed (sha256 {found}): re-read it, "
        f"port the change to {override}, then update FINGERPRINTS"
    )


#: The private methods GatewayServer overrides: upstream calls them with these parameters.
OVERRIDDEN = [
    "_handle_eio_connect",
    "_handle_eio_message",
    "_handle_event",
    "_handle_disconnect",
    "_handle_eio_disconnect",
    "_trigger_event",
    "_send_packet",
]


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_the_overridden_socketio_methods_take_what_upstream_passes(name: str) -> None:
    upstream = list(inspect.signature(getattr(socketio.AsyncServer, name)).parameters)
    ours = list(inspect.signature(getattr(GatewayServer, name)).parameters)
    assert ours == upstream, (
        f"{SIO}.{name} now takes {upstream}; GatewayServer.{name} (sanic_rt/sio_server.py) "
        f"takes {ours}: re-verify how upstream calls it and port the override"
    )


def test_engineio_calls_our_handlers_and_the_packet_class_is_ours() -> None:
    # python-socketio socketio/base_server.py BaseServer.__init__ registers bound
    # methods of self with Engine.IO and takes ``serializer`` as its packet class.
    config = config_from_dict({"auth": {"secret": SECRET}})
    sio = create_app(config).ctx.gateway.sio
    for event, name in [
        ("connect", "_handle_eio_connect"),
        ("message", "_handle_eio_message"),
        ("disconnect", "_handle_eio_disconnect"),
    ]:
        handler = sio.eio.handlers.get(event)
        assert getattr(handler, "__func__", None) is getattr(GatewayServer, name), (
            f"python-socketio socketio/base_server.py BaseServer.__init__ no longer registers "
            f"self.{name} for Engine.IO {event!r}: GatewayServer.{name} would never run"
        )
    assert sio.packet_class is GatewayPacket, (
        "python-socketio socketio/base_server.py BaseServer.__init__ no longer uses "
        "serializer= as packet_class: malformed payloads would get no answer"
    )


def test_a_packet_whose_payload_fails_names_its_header() -> None:
    # Behaviour relied on by GatewayPacket (sanic_rt/sio_server.py): python-socketio's
    # Packet.__init__/decode (socketio/packet.py) know type, namespace and ack id
    # when the payload fails, and the failure is a ValueError or RecursionError.
    config = config_from_dict({"auth": {"secret": SECRET}})
    packet_class = create_app(config).ctx.gateway.sio.packet_class  # with the app's JSON
    for payload in ("{]", "[" * 5000, '["ping",{"x":' + "1" * 5000 + "}]"):
        with pytest.raises(MalformedPacket) as raised:
            packet_class(encoded_packet="2/chats,7" + payload)
        bad = raised.value
        assert (bad.packet_type, bad.namespace, bad.ack_id) == (packet.EVENT, "/chats", 7), (
            "python-socketio socketio/packet.py Packet.__init__/decode no longer set "
            "packet_type, namespace and id before the payload fails: re-verify GatewayPacket"
        )
    good = packet_class(encoded_packet='2/chats,7["ping",{}]')
    assert (good.packet_type, good.namespace, good.id, good.data) == (
        packet.EVENT,
        "/chats",
        7,
        ["ping", {}],
    )


@contextlib.asynccontextmanager
async def serving(
    config_data: dict[str, Any], ws: type[WebSocketsSansIOProtocol] | None = None
) -> AsyncIterator[tuple[Any, uvicorn.Server, str]]:
    """Like sanic_rt.testing.running_app, but it also yields uvicorn's server (and its
    live protocol instances), and ``ws`` may swap the websocket protocol class."""
    config = config_from_dict(config_data)
    config = config.replace(server=dataclasses.replace(config.server, host=LOOPBACK, port=0))
    app = create_app(config)
    served = uvicorn_config(config, app.ctx.asgi)
    if ws is not None:
        served.ws = ws
    server = uvicorn.Server(served)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "the server did not start"
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield app, server, f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def websocket_protocols(server: uvicorn.Server, cls: type) -> list[Any]:
    return [c for c in server.server_state.connections if isinstance(c, cls)]


# --- python-socketio + python-engineio, on a real connection -------------------------


async def test_the_environ_kept_for_a_connection_is_the_one_we_trimmed() -> None:
    # socketio/async_server.py AsyncServer._handle_eio_connect keeps the environ
    # python-engineio built (engineio/async_drivers/asgi.py translate_request, with
    # a wsgi.input reader) for the connection's life; GatewayServer drops wsgi.input.
    # On a long-polling connection, the socket has the queue GatewayServer wakes.
    config = {"auth": {"secret": SECRET}}
    async with serving(config) as (app, _, url):
        sio = app.ctx.gateway.sio
        client = await connected_client(app, url, "polling")
        try:
            (eio_sid,) = sio.environ
            environ = sio.environ[eio_sid]
            assert environ.get("REQUEST_METHOD") == "GET" and "QUERY_STRING" in environ, (
                f"{SIO}.environ no longer maps the Engine.IO sid to the handshake environ: "
                "re-verify GatewayServer._handle_eio_connect"
            )
            assert "wsgi.input" not in environ
            socket = sio.eio.sockets[eio_sid]
            assert isinstance(socket.queue, asyncio.Queue) and socket.upgraded is False, (
                "python-engineio engineio/async_socket.py AsyncSocket no longer has the "
                "queue/upgraded GatewayServer._handle_eio_disconnect and close_session use"
            )
        finally:
            await client.disconnect()
        await eventually(lambda: not sio.environ)


# --- uvicorn: what WebSocketProtocol (sanic_rt/server.py) relies on --------------------

UVICORN = "uvicorn uvicorn/protocols/websockets/websockets_sansio_impl.py WebSocketsSansIOProtocol"


async def connected_client(app: Any, url: str, transport: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient()
    await client.connect(
        url,
        namespaces=["/chats"],
        auth={"token": token(app.ctx.gateway.config, "alice")},
        transports=[transport],
    )
    return client


async def connected_websocket_client(app: Any, url: str) -> socketio.AsyncClient:
    return await connected_client(app, url, "websocket")


async def test_our_websocket_protocol_releases_the_handshake_once_accepted() -> None:
    async with serving({"auth": {"secret": SECRET}}) as (app, server, url):
        client = await connected_websocket_client(app, url)
        try:
            (protocol,) = websocket_protocols(server, WebSocketProtocol)
            assert protocol.handshake_complete
            assert protocol.request is None and protocol.response is None, (
                "WebSocketProtocol.send (sanic_rt/server.py) no longer releases the handshake "
                "request/response uvicorn keeps: ~1.6 KB more per idle connection"
            )
            # and the connection goes on without them
            assert (await client.call("ping", {}, namespace="/chats", timeout=10))["ok"]
        finally:
            await client.disconnect()


async def test_uvicorn_keeps_the_handshake_request_and_response_we_release() -> None:
    # What WebSocketProtocol.send clears must be what upstream keeps: if uvicorn
    # renames or stops keeping them, the release is a silent no-op (or redundant).
    async with serving({"auth": {"secret": SECRET}}, ws=WebSocketsSansIOProtocol) as (
        app,
        server,
        url,
    ):
        client = await connected_websocket_client(app, url)
        try:
            (protocol,) = websocket_protocols(server, WebSocketsSansIOProtocol)
            assert not isinstance(protocol, WebSocketProtocol)
            kept = (getattr(protocol, "request", None), getattr(protocol, "response", None))
            assert (
                protocol.handshake_complete
                and isinstance(kept[0], Request)
                and isinstance(kept[1], Response)
                and kept[1].status_code == 101
            ), (
                f"{UVICORN}.handle_connect no longer keeps self.request/self.response after "
                f"accept (found {kept!r}): re-verify WebSocketProtocol.send's release"
            )
        finally:
            await client.disconnect()


def test_uvicorn_reads_the_handshake_request_and_response_only_before_accept() -> None:
    # WebSocketProtocol.send sets them to None once the accept has gone out: safe
    # only while upstream reads them in handle_connect and send's accept branch alone.
    mention = re.compile(r"self\.(request|response)\b")
    readers = sorted(
        name
        for name, member in vars(WebSocketsSansIOProtocol).items()
        if inspect.isfunction(member) and mention.search(inspect.getsource(member))
    )
    send = inspect.getsource(WebSocketsSansIOProtocol.send)
    accept_branch = send.partition('if message["type"] == "websocket.accept":')[2].partition(
        'elif message["type"] == "websocket.close":'
    )[0]
    assert readers == ["handle_connect", "send"] and len(mention.findall(send)) == len(
        mention.findall(accept_branch)
    ), (
        f"{UVICORN} now uses self.request/self.response in {readers} (send: outside the "
        "accept branch?): re-verify that nothing reads them after the accept, or "
        "WebSocketProtocol.send's release (sanic_rt/server.py) breaks it"
    )


async def test_uvicorn_still_leaves_a_rejected_handshake_unanswered() -> None:
    # WebSocketProtocol.data_received writes the 431 that websockets prepared for a
    # handshake it rejected while parsing; upstream (WebSocketsSansIOProtocol.
    # data_received) leaves it unsent. If upstream starts writing it, drop our fix.
    async with serving({"auth": {"secret": SECRET}}, ws=WebSocketsSansIOProtocol) as (
        _,
        server,
        url,
    ):
        port = int(url.rpartition(":")[2])
        _, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(OVERSIZED_HEADER_HANDSHAKE)
        await writer.drain()
        try:
            (protocol,) = await eventually(
                lambda: [
                    p
                    for p in websocket_protocols(server, WebSocketsSansIOProtocol)
                    if p.conn.handshake_exc is not None
                ]
            )
            assert not protocol.handshake_initiated
            unsent = b"".join(protocol.conn.data_to_send())
            assert unsent.startswith(b"HTTP/1.1 431"), (
                f"{UVICORN}.data_received now answers a handshake websockets rejected "
                f"(left unsent: {unsent[:40]!r}): WebSocketProtocol.data_received may go"
            )
        finally:
            writer.close()


# --- Sanic: a blueprint's pending routes (sanic_rt/plugin_manager.py) ------------------


def test_a_blueprint_keeps_its_routes_in_future_routes_until_registered() -> None:
    # sanic/mixins/routes.py RouteMixin.route appends a sanic/models/futures.py
    # FutureRoute to _future_routes; PluginHost.blueprints lists them per plugin.
    blueprint = Blueprint("probe", url_prefix="/probe")

    @blueprint.get("/status")
    async def status(request: Any) -> Any:
        return text("ok")

    routes = list(getattr(blueprint, "_future_routes", ()))
    assert [(r.uri, sorted(r.methods)) for r in routes] == [("/status", ["GET"])], (
        "sanic sanic/mixins/routes.py RouteMixin no longer keeps FutureRoute(uri, methods) "
        "in Blueprint._future_routes: re-verify PluginHost.blueprints (sanic_rt/plugin_manager.py)"
    )


def test_the_plugin_host_lists_a_plugin_s_routes() -> None:
    def register_routes(register: Any) -> None:
        blueprint = Blueprint("support_desk", url_prefix="/support")

        @blueprint.route("/agents/<agent>", methods=["GET", "POST"])
        async def agent(request: Any, agent: str) -> Any:
            return text(agent)

        register(blueprint)

    host = PluginHost(config_from_dict({"auth": {"secret": SECRET}, "plugins": {"enabled": []}}))
    host.load([inline_plugin("desk", register_routes=register_routes)])
    assert len(host.blueprints()) == 1
    (listed,) = host.infos["desk"].routes
    methods, _, uri = listed.partition(" ")
    assert (sorted(methods.split(",")), uri) == (["GET", "POST"], "/support/agents/<agent>")


# --- prometheus-client: what PendingHistogram (sanic_rt/metrics.py) writes into ----------


def test_a_flushed_pending_histogram_equals_upstream_observe() -> None:
    # PendingHistogram picks the bucket as prometheus_client/metrics.py
    # Histogram.observe does and adds into the child's private _upper_bounds,
    # _buckets and _sum; the exposition must be what upstream's observe gives.
    values = [0.0, 0.005, 0.0051, 0.1, 0.99, 1.0, 2.5, 7.0, 1e9]
    samples = []
    for pending in (False, True):
        registry = CollectorRegistry()
        child = Histogram("probe_seconds", "probe", ["op"], registry=registry).labels("x")
        if pending:
            histogram = PendingHistogram(child)
            for value in values:
                histogram.observe(value)
            histogram.flush()
        else:
            for value in values:
                child.observe(value)
        samples.append(
            sorted(
                (s.name, tuple(sorted(s.labels.items())), s.value)
                for metric in registry.collect()
                for s in metric.samples
                if not s.name.endswith("_created")
            )
        )
    upstream, ours = samples
    assert ours == upstream, (
        "prometheus-client prometheus_client/metrics.py Histogram (observe, _upper_bounds, "
        "_buckets, _sum) changed: re-verify PendingHistogram.observe/flush (sanic_rt/metrics.py)"
    )
