"""HTTP routes of the core: health, readiness and the server-to-server API.

Every ``/api/`` response uses the ack envelope. Plugin blueprints under
``/api/`` get the same API-key check and error handling.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from sanic import Blueprint, Request, Sanic
from sanic.exceptions import NotFound, SanicException
from sanic.response import HTTPResponse, json

from .backend import BackendUnavailable
from .envelope import HTTP_STATUS, AckError, error, ok
from .validation import IdList, validate

if TYPE_CHECKING:
    from .gateway import Gateway
    from .namespace import BaseNamespace

    N = TypeVar("N", bound=BaseNamespace)

log = logging.getLogger("sanic_rt.api")

#: Routes under this prefix get the API-key check and the error envelope.
API_PREFIX = "/api/"
MAX_QUERY_IDS = 500

core = Blueprint("sanic_rt_core")
#: the routes of a standalone server only; an app sanic-rt is attached to has its own
service = Blueprint("sanic_rt_service")


def envelope(data: Any = None, status: int = 200) -> HTTPResponse:
    """The success envelope ``{"ok": true, "data": data}`` as a JSON response.

    :param data: anything JSON-serialisable.
    :param status: the HTTP status (200 unless you say otherwise).

    To answer with an error, raise :class:`~sanic_rt.api.AckError` instead:
    under ``/api/`` it becomes the error envelope with its HTTP status.
    """
    return json(ok(data), status=status)


async def push_to_users(
    request: Request, user_ids: list[str], namespace: str, event: str, data: Any
) -> HTTPResponse:
    """Emit ``event`` to users' connections on ``namespace``; answer ``{users, connected}``.

    The HTTP face of :meth:`Gateway.push <sanic_rt.api.Gateway.push>`: cluster-wide,
    and ``unavailable`` (503) before anything is sent if presence storage is down.

    :param request: the route's request (its app's gateway does the push).
    :param user_ids: who to send to; duplicates are sent once.
    :param namespace: the namespace path whose connections receive it.
    :param event: the Socket.IO event name.
    :param data: the event's payload.
    """
    users, connected = await gateway_of(request).push(user_ids, namespace, event, data)
    return envelope({"users": users, "connected": connected})


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object; else ``AckError("bad_request")``.

    :param request: the route's request.
    """
    try:
        body = request.json
    except Exception:
        raise AckError("bad_request", "body: invalid JSON", field="body") from None
    if not isinstance(body, dict):
        raise AckError("bad_request", "body: expected a JSON object", field="body")
    return body


def gateway_of(request: Request) -> Gateway:
    """The :class:`~sanic_rt.api.Gateway` of the app serving ``request``."""
    gateway: Gateway = request.app.ctx.gateway
    return gateway


def namespace_of(request: Request, path: str, kind: type[N] | None = None) -> N:
    """This app's instance of the namespace registered at ``path``.

    :param request: the route's request.
    :param path: the namespace path, e.g. ``"/polls"``.
    :param kind: the expected class (your namespace class), so the result is
        typed as it; a mismatch raises ``TypeError``.
    :raises LookupError: no namespace is registered at ``path``.

    See :meth:`Gateway.namespace <sanic_rt.api.Gateway.namespace>` for the same
    from a hook or a namespace.
    """
    return gateway_of(request).namespace(path, kind)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[HTTPResponse]])


def require_api_key(handler: Handler) -> Handler:
    """Guard a route outside ``/api/`` with the API-key check of ``/api/`` routes.

    Routes under ``/api/`` are already guarded; decorate a handler registered
    elsewhere (for example a webhook under ``/hooks/``) to require
    ``Authorization: Bearer <key>`` as well. A missing or wrong key answers
    401 ``unauthorized`` in the envelope.
    """

    @functools.wraps(handler)
    async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        refusal: HTTPResponse | None = await request.app.ctx.check_api_key(request, True)
        if refusal is not None:
            return refusal
        return await handler(request, *args, **kwargs)

    return guarded  # type: ignore[return-value]


#: What ``GET /`` and every non-API 404 answer: where to go instead of a blank page.
POINTER = {
    "service": "sanic-rt",
    "socket_io_path": "/socket.io/",
    "health": "/health",
    "ready": "/ready",
    "api": "/api/v1/",
    "docs": "docs/REALTIME_SOCKET_EVENTS.md in the sanic-rt source (client events, HTTP API)",
}


@service.get("/")
async def index(request: Request) -> HTTPResponse:
    return json({"ok": True, "data": POINTER})


@service.get("/health")
async def health(request: Request) -> HTTPResponse:
    return json({"ok": True, "data": {"status": "up"}})


@service.get("/ready")
async def ready(request: Request) -> HTTPResponse:
    gw = gateway_of(request)
    parts = {"presence": "up", "cluster": "up"}
    try:
        await gw.presence.check()
    except BackendUnavailable:
        parts["presence"] = "down"
    if not await gw.check_manager():
        parts["cluster"] = "down"
    down = [name for name, state in parts.items() if state == "down"]
    if down:
        return json(error("unavailable", f"down: {', '.join(down)}") | {"data": parts}, 503)
    return json(ok(parts))


@core.get("/api/v1/presence/stats")
async def presence_stats(request: Request) -> HTTPResponse:
    stats = await gateway_of(request).presence.stats()
    return envelope(
        {
            "online_users": stats.online_users,
            "connections": stats.connections,
            "by_namespace": stats.by_namespace,
        }
    )


@core.get("/api/v1/presence/online")
async def presence_online(request: Request) -> HTTPResponse:
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        raise AckError("bad_request", "limit: expected an integer", field="limit") from None
    if not 1 <= limit <= 1000:
        raise AckError("bad_request", "limit: expected 1..1000", field="limit")
    users, cursor = await gateway_of(request).presence.online_users(
        request.args.get("cursor") or None, limit
    )
    return envelope({"user_ids": users, "next_cursor": cursor})


@core.post("/api/v1/presence/query")
async def presence_query(request: Request) -> HTTPResponse:
    payload = validate(json_body(request), {"user_ids": IdList(max_items=MAX_QUERY_IDS)})
    records = await gateway_of(request).presence.get_many(payload["user_ids"])
    return envelope({uid: records[uid].as_dict() for uid in payload["user_ids"]})


@core.get("/api/v1/presence/<user_id:str>")
async def presence_one(request: Request, user_id: str) -> HTTPResponse:
    record = await gateway_of(request).presence.get(user_id)
    return envelope(record.as_dict())


@core.post("/api/v1/users/<user_id:str>/disconnect")
async def disconnect_user(request: Request, user_id: str) -> HTTPResponse:
    count = await gateway_of(request).disconnect_user(user_id)
    return envelope({"connections": count})


def key_matches(presented: bytes, keys: list[bytes]) -> bool:
    """Whether ``presented`` is one of ``keys``."""
    # Compare against every key so that timing says nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


def bearer_key_matches(request: Request, keys: list[bytes]) -> bool:
    """Whether the request carries ``Authorization: Bearer <one of keys>``."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    presented = given.strip().encode()
    # "Bearer" with nothing after it never matches, whatever the keys.
    return scheme.lower() == "bearer" and bool(presented) and key_matches(presented, keys)


def install(
    app: Sanic[Any, Any],
    api_keys: list[str],
    production: bool,
    allowed_origins: Iterable[str] = (),
    *,
    standalone: bool = True,
) -> None:
    """Add the core routes, the API-key check and the envelope error handlers.

    ``allowed_origins`` (``[server] cors_allowed_origins``) are the browser
    origins besides the server's own that may call the API while it is open.
    ``standalone=False`` (an app sanic-rt is attached to) leaves out the
    service routes (``/``, ``/health``, ``/ready``) and the pointer answering
    other 404s: the host app has its own.
    """
    app.blueprint(core)
    if standalone:
        app.blueprint(service)
    origins = frozenset(o.lower() for o in allowed_origins if o != "*")
    keys = [k.encode() for k in api_keys]
    if not keys:
        if production:
            log.warning("no [api] keys: the HTTP API under /api/ is turned off (404)")
        else:
            log.warning("no [api] keys: the HTTP API under /api/ is open (dev mode)")

    @app.on_request
    async def check_api_key(request: Request, guarded: bool = False) -> HTTPResponse | None:
        if not guarded and not _is_api(request):
            return None
        if not keys:
            if production:
                return json(error("not_found", "not found"), 404)
            return _refuse_cross_site(request, origins)
        if not bearer_key_matches(request, keys):
            return json(error("unauthorized", "missing or wrong API key"), 401)
        return None

    app.ctx.check_api_key = check_api_key  # for require_api_key

    @app.exception(AckError)
    async def ack_error(request: Request, exc: AckError) -> HTTPResponse:
        return json(exc.envelope(), HTTP_STATUS.get(exc.code, 400))

    @app.exception(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> HTTPResponse:
        return json(error("unavailable", "temporarily unavailable; try again"), 503)

    @app.exception(Exception)
    async def other_error(request: Request, exc: Exception) -> HTTPResponse:
        # Every /api/ answer uses the envelope, Sanic's own 404/405/413 too.
        # Elsewhere (/health, plugin pages) Sanic's default rendering stays.
        if not _is_api(request):
            if standalone and isinstance(exc, NotFound):
                return json(error("not_found", f"no route {request.path}") | {"data": POINTER}, 404)
            return request.app.error_handler.default(request, exc)
        status = getattr(exc, "status_code", 500) if isinstance(exc, SanicException) else 500
        if status >= 500:
            log.exception("error in %s %s", request.method, request.path)
            return json(error("internal", "internal error"), status)
        code = _CODE_FOR_STATUS.get(status, "bad_request")
        return json(error(code, str(exc) or code), status)


def _refuse_cross_site(request: Request, origins: frozenset[str]) -> HTTPResponse | None:
    """Keep the open (keyless, dev) API from being driven by other sites' pages.

    A browser sends ``Origin`` with cross-site requests, and a ``text/plain``
    POST needs no CORS preflight: without these checks any page the developer
    visits could push notifications or disconnect users. Server-to-server
    callers send no ``Origin``; ``"*"`` in cors_allowed_origins is for
    Socket.IO only and does not open the API.
    """
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(request, origin) and origin.lower() not in origins:
        return json(error("forbidden", "origin not allowed"), 403)
    if request.method == "POST" and not _json_or_nothing(request):
        return json(error("bad_request", f"Content-Type must be {JSON_TYPE}"), 415)
    return None


def _json_or_nothing(request: Request) -> bool:
    """A JSON body, or none (``POST .../disconnect``; clients label even that one
    differently, and a browser sends ``Origin`` with every cross-site POST)."""
    declared = request.headers.get("content-type", "")
    return not request.body or declared.split(";")[0].strip().lower() == JSON_TYPE


def _same_origin(request: Request, origin: str) -> bool:
    _scheme, sep, netloc = origin.partition("://")
    host = request.headers.get("host", "")
    return bool(sep and host) and netloc.lower() == host.lower()


JSON_TYPE = "application/json"

# Status -> envelope code for Sanic's own HTTP errors under /api/.
_CODE_FOR_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


def _is_api(request: Request) -> bool:
    """Whether the API-key check and the envelope apply.

    By path and by matched route, so a route registered under /api/ is covered
    however the request spells its path.
    """
    route = request.route
    return request.path.startswith(API_PREFIX) or (
        route is not None and ("/" + route.path.lstrip("/")).startswith(API_PREFIX)
    )
