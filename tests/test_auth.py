"""Authentication over a real server (started through the CLI) with real python-socketio clients.

Most cases share one module-scoped server: each case uses its own user id,
so they do not interfere, and the server's log is checked for what it says
about each refusal (once, at info level) and what it must never say (any
token material).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import socketio

from tests.conftest import base_config
from tests.support.clients import SECRET, Client, eventually, make_token
from tests.support.procs import HOST, Proc, server_process
from tests.support.tokens import claims, public_jwk, raw_token, rsa_keypair, token_material

ISSUER = "https://issuer.test"
AUDIENCE = "sanic-rt-tests"
MAX_CONNECTIONS = 3


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("keys")
    private, public = rsa_keypair()
    (tmp / "public.pem").write_text(public)
    other_private, _ = rsa_keypair()
    return {"private": private, "public": public, "public_file": tmp / "public.pem",
            "other_private": other_private}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("auth-server")
    config = base_config(
        auth={
            "algorithms": ["HS256", "RS256"],
            "public_key_file": str(keys["public_file"]),
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "max_connections_per_user": MAX_CONNECTIONS,
        }
    )
    proc = server_process(tmp, config).start()
    yield proc
    proc.stop()


def hs(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256", **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm=alg, headers=headers or None)


def good(user_id: str | None = "alice", ttl: float = 600, **extra: Any) -> dict[str, Any]:
    """Claims the module server accepts (iss and aud set), with changes."""
    return claims(user_id, ttl, **{"iss": ISSUER, "aud": AUDIENCE, **extra})


async def refusal(
    url: str,
    token: str | None = None,
    *,
    auth: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    namespace: str = "/",
    transports: list[str] | None = None,
) -> dict[str, Any]:
    """Connect, expect a refusal, and return what python-socketio's connect_error got."""
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            url,
            token,
            namespaces=[namespace],
            auth=auth,
            headers=headers,
            transports=transports,
            wait_timeout=5,
        )
    await eventually(lambda: client.refusals, timeout=5)
    await client.close()
    return client.refusals[0]


def refused(code: str, message: str) -> dict[str, Any]:
    """What the python client's connect_error handler receives for a refusal."""
    return {"message": message, "data": {"code": code, "message": message}}


def assert_no_token_material(log: str, tokens: list[str]) -> None:
    for token in tokens:
        for piece in token_material(token):
            assert piece not in log, f"token material {piece!r} in the server log"


# --- the bad-token matrix ------------------------------------------------------------


def bad_token_cases(keys: dict[str, Any]) -> list[tuple[str, dict[str, Any], str, str]]:
    """(case, auth payload, code, message): every way a token is refused."""
    now = int(time.time())
    oversized = hs(good("big", padding="x" * 9000))
    confused = raw_token({"alg": "HS256", "typ": "JWT"}, good("eve"), keys["public"].encode())
    return [
        ("missing", {}, "missing_token", "no token: pass auth {token} or an Authorization header"),
        ("empty", {"token": ""}, "missing_token",
         "no token: pass auth {token} or an Authorization header"),
        ("not a string", {"token": 12345}, "invalid_token", "auth.token must be a string"),
        ("garbage", {"token": "garbage-not-a-jwt-Zq9"}, "invalid_token", "malformed token"),
        ("three garbage parts", {"token": "aaaaaaaaaa.bbbbbbbbbb.cccccccccc"}, "invalid_token",
         "malformed token"),
        ("bad signature", {"token": hs(good("mallory"), secret="x" * 40)}, "invalid_token",
         "bad signature"),
        ("RS256 signed by another key",
         {"token": jwt.encode(good("mallory"), keys["other_private"], algorithm="RS256")},
         "invalid_token", "bad signature"),
        ("alg none", {"token": raw_token({"alg": "none", "typ": "JWT"}, good("eve"), None)},
         "invalid_token", "signing algorithm not allowed"),
        ("alg None", {"token": raw_token({"alg": "None"}, good("eve"), None)},
         "invalid_token", "signing algorithm not allowed"),
        ("alg not in the allow-list", {"token": hs(good("eve"), secret=SECRET * 2, alg="HS512")},
         "invalid_token", "signing algorithm not allowed"),
        ("HS256 signed with the RSA public key", {"token": confused},
         "invalid_token", "bad signature"),
        ("expired", {"token": hs(good("old", exp=now - 30))}, "token_expired",
         "token has expired"),
        ("not yet valid (nbf)", {"token": hs(good("early", nbf=now + 300))}, "invalid_token",
         "token is not yet valid (nbf/iat)"),
        ("not yet valid (iat)", {"token": hs(good("early", iat=now + 300))}, "invalid_token",
         "token is not yet valid (nbf/iat)"),
        ("wrong issuer", {"token": hs(good("bob", iss="https://evil.test"))}, "invalid_token",
         "wrong issuer (iss)"),
        ("no issuer", {"token": hs(good("bob", iss=None))}, "invalid_token",
         "missing claim 'iss'"),
        ("wrong audience", {"token": hs(good("bob", aud="another-app"))}, "invalid_token",
         "wrong audience (aud)"),
        ("no exp (required)", {"token": hs(good("bob", exp=None))}, "invalid_token",
         "missing claim 'exp'"),
        ("exp as a numeric string", {"token": hs(good("bob", exp=str(now + 600)))},
         "invalid_token", "claim 'exp' must be a number"),
        ("nbf as a numeric string", {"token": hs(good("bob", nbf=str(now - 60)))},
         "invalid_token", "claim 'nbf' must be a number"),
        ("missing user claim", {"token": hs(good(None))}, "invalid_token",
         "claim 'sub' must be a non-empty string"),
        ("empty user claim", {"token": hs(good(""))}, "invalid_token",
         "claim 'sub' must be a non-empty string"),
        ("non-string user claim", {"token": hs(good(None, sub=42))}, "invalid_token",
         "claim 'sub' must be a string"),
        ("over-long user claim", {"token": hs(good("u" * 129))}, "invalid_token",
         "claim 'sub' longer than 128"),
        ("oversized", {"token": oversized}, "invalid_token", "token larger than 8192 bytes"),
    ]  # fmt: skip


async def test_bad_token_matrix(server: Proc, keys: dict[str, Any]) -> None:
    cases = bad_token_cases(keys)
    start = len(server.log())
    for case, auth, code, message in cases:
        before = len(server.log())
        got = await refusal(server.url, auth=auth)
        assert got == refused(code, message), case

        # The reason is logged once, at info level, without token material.
        def new_refusals(before: int = before) -> list[str]:
            lines = server.log()[before:].splitlines()
            return [line for line in lines if "refused connection" in line]

        lines = await eventually(new_refusals, timeout=5)
        assert len(lines) == 1, (case, lines)
        assert " INFO " in lines[0] and f"{code} ({message})" in lines[0], (case, lines[0])
    log = server.log()[start:]
    assert len([ln for ln in log.splitlines() if "refused connection" in ln]) == len(cases)
    tokens = [auth["token"] for _, auth, _, _ in cases if isinstance(auth.get("token"), str)]
    assert_no_token_material(server.log(), [t for t in tokens if t])


async def test_boundary_user_claim_and_token_size_accepted(server: Proc, clients) -> None:
    # 128 characters is allowed; a token just under 8 KiB is decoded.
    client = await clients(server.url, hs(good("u" * 128)), namespaces=["/"])
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    largest, just_over = sized_token(8192), sized_token(8194)
    assert 8180 <= len(largest) <= 8192 < len(just_over) <= 8200
    client = await clients(server.url, largest, namespaces=["/"])
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    got = await refusal(server.url, just_over)
    assert got == refused("invalid_token", "token larger than 8192 bytes")


def sized_token(limit: int) -> str:
    """The largest valid token of at most ``limit`` bytes (padded with a claim)."""
    low, high = 0, limit
    while low < high:  # the largest padding whose token fits
        mid = (low + high + 1) // 2
        if len(hs(good("sized", padding="p" * mid))) <= limit:
            low = mid
        else:
            high = mid - 1
    return hs(good("sized", padding="p" * low))


async def test_rs256_token_is_accepted(server: Proc, clients, keys: dict[str, Any]) -> None:
    token = jwt.encode(good("rsa-user"), keys["private"], algorithm="RS256")
    client = await clients(server.url, token, namespaces=["/", "/chats"])
    for ns in ("/", "/chats"):
        assert await client.call("ping", {}, namespace=ns) == {
            "ok": True,
            "data": {"status": "online"},
        }


# --- token sources -----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_authorization_header(server: Proc, clients, transport: str) -> None:
    token = hs(good(f"header-{transport}"))
    client = await clients(
        server.url,
        None,
        namespaces=["/"],
        transports=[transport],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True


async def test_large_tokens_in_the_authorization_header(server: Proc, clients) -> None:
    # The websocket handshake is parsed by the `websockets` library: a header
    # line (name, ": ", value) may be 8190 bytes, so a header token at most
    # 8168. Long-polling (httptools) has no header limit below our 8 KiB cap.
    ws_largest = sized_token(8190 - len("Authorization: Bearer "))
    client = await clients(
        server.url, None, namespaces=["/"], headers={"Authorization": f"Bearer {ws_largest}"}
    )
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    polling_largest = sized_token(8192)
    client = await clients(
        server.url,
        None,
        namespaces=["/"],
        transports=["polling"],
        headers={"Authorization": f"Bearer {polling_largest}"},
    )
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True


async def test_auth_payload_comes_before_the_header(server: Proc, clients) -> None:
    good_token, bad_token = hs(good("order")), hs(good("order"), secret="y" * 40)
    # A good payload wins over a bad header ...
    await clients(
        server.url, good_token, namespaces=["/"], headers={"Authorization": f"Bearer {bad_token}"}
    )
    # ... and a bad payload is not rescued by a good header.
    got = await refusal(server.url, bad_token, headers={"Authorization": f"Bearer {good_token}"})
    assert got["data"]["code"] == "invalid_token"


async def test_query_token_is_ignored_by_default(server: Proc) -> None:
    token = hs(good("query"))
    got = await refusal(f"{server.url}/?token={token}")
    assert got["data"]["code"] == "missing_token"


async def test_header_without_bearer_scheme_is_missing(server: Proc) -> None:
    got = await refusal(server.url, headers={"Authorization": f"Basic {hs(good('basic'))}"})
    assert got["data"]["code"] == "missing_token"


# --- refresh and expiry --------------------------------------------------------------


async def test_refresh(server: Proc, clients) -> None:
    client = await clients(server.url, hs(good("refresher")), namespaces=["/"])
    fresh = good("refresher", ttl=1200)
    ack = await client.call("auth:refresh", {"token": hs(fresh)}, namespace="/")
    assert ack == {"ok": True, "data": {"exp": float(fresh["exp"])}}

    now = int(time.time())
    answers = {
        "garbage": ("garbage.token.here", "invalid_token", "malformed token"),
        "bad signature": (hs(good("refresher"), secret="z" * 40), "invalid_token",
                          "bad signature"),
        "expired": (hs(good("refresher", exp=now - 5)), "token_expired", "token has expired"),
        "oversized": (hs(good("refresher", padding="x" * 9000)), "invalid_token",
                      "token larger than 8192 bytes"),
        "another user": (hs(good("somebody-else")), "forbidden", "token is for another user"),
    }  # fmt: skip
    for case, (token, code, message) in answers.items():
        ack = await client.call("auth:refresh", {"token": token}, namespace="/")
        assert ack == {"ok": False, "error": {"code": code, "message": message}}, case
    ack = await client.call("auth:refresh", {"token": 5}, namespace="/")
    assert ack == {
        "ok": False,
        "error": {
            "code": "bad_request",
            "message": "token: expected a non-empty string",
            "field": "token",
        },
    }
    # The connection stays, with the claims of the last good token.
    assert client.sio.connected
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    assert client.events("auth:expired", "/") == []


async def test_refresh_extends_the_connection(server: Proc, clients) -> None:
    first = good("extended", ttl=2)
    client = await clients(server.url, hs(first), namespaces=["/"])
    fresh = good("extended", ttl=600)
    ack = await client.call("auth:refresh", {"token": hs(fresh)}, namespace="/")
    assert ack["data"]["exp"] == fresh["exp"]
    # Past the first token's expiry (+ margin) the connection is still up.
    await eventually(lambda: time.time() > first["exp"] + 1.5, timeout=5)
    assert client.sio.connected
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    assert client.events("auth:expired", "/") == []


async def test_disconnect_on_expiry(server: Proc, clients) -> None:
    short = good("short-lived", ttl=3)
    client = await clients(server.url, hs(short), namespaces=["/", "/chats"])
    # Each namespace connection gets auth:expired with the token's exp, then is closed.
    for ns in ("/", "/chats"):
        events = await eventually(lambda ns=ns: client.events("auth:expired", ns), timeout=10)
        assert events == [{"exp": float(short["exp"])}]
    await eventually(lambda: not client.sio.connected, timeout=10)
    assert time.time() <= short["exp"] + 5  # leeway is 0


async def test_refresh_to_a_shorter_token_expires_at_the_new_exp(server: Proc, clients) -> None:
    client = await clients(server.url, hs(good("shortened", ttl=600)), namespaces=["/"])
    short = good("shortened", ttl=2)
    ack = await client.call("auth:refresh", {"token": hs(short)}, namespace="/")
    assert ack == {"ok": True, "data": {"exp": float(short["exp"])}}
    await eventually(lambda: client.events("auth:expired", "/"), timeout=10)
    assert client.events("auth:expired", "/") == [{"exp": float(short["exp"])}]
    await eventually(lambda: not client.sio.connected, timeout=10)
    assert time.time() <= short["exp"] + 5


# --- the per-user connection limit -------------------------------------------------


async def test_connection_limit_across_namespaces(server: Proc, clients) -> None:
    token = hs(good("limited"))
    await clients(server.url, token, namespaces=["/", "/chats"])  # 2
    second = await clients(server.url, token, namespaces=["/"])  # 3 = the limit
    got = await refusal(server.url, token, namespace="/chats")
    message = f"at most {MAX_CONNECTIONS} connections"
    assert got == refused("too_many_connections", message)
    # Another user is not affected.
    await clients(server.url, hs(good("unlimited")), namespaces=["/chats"])
    # Closing one frees a slot.
    await second.close()

    async def connects() -> bool:
        try:
            await clients(server.url, token, namespaces=["/chats"], wait_timeout=5)
        except socketio.exceptions.ConnectionError:
            return False
        return True

    await eventually(connects, timeout=10, interval=0.1)
    assert "too_many_connections" in server.log() and "user limited" in server.log()


# --- JWKS and query tokens (their own server) ----------------------------------------


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 in a thread; counts fetches; keys can change."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.gate = threading.Event()  # cleared: answers wait until it is set
        self.gate.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                outer.gate.wait(30)
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


REFETCH_INTERVAL = 2.0


async def test_jwks_keys_by_kid_and_bounded_refetch(tmp_path: Path, clients) -> None:
    k1, k2 = rsa_keypair()[0], rsa_keypair()[0]
    with JwksServer() as jwks:
        jwks.keys = [public_jwk(k1, "k1")]
        config = base_config(
            auth={
                "secret": "",
                "algorithms": ["RS256", "RS384"],
                "jwks_url": jwks.url,
                "jwks_refetch_interval": REFETCH_INTERVAL,
                "allow_query_token": True,
            }
        )
        server = server_process(tmp_path, config).start()
        try:
            await _check_jwks(server, jwks, k1, k2, clients)
            await _check_query_token(server, k1, clients)
        finally:
            server.stop()


async def _check_jwks(server: Proc, jwks: JwksServer, k1: str, k2: str, clients) -> None:
    def rs(private: str, kid: str | None, user: str, alg: str = "RS256") -> str:
        headers = {"kid": kid} if kid else None
        return jwt.encode(claims(user), private, algorithm=alg, headers=headers)

    client = await clients(server.url, rs(k1, "k1", "jwks-user"), namespaces=["/"])
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    assert jwks.fetches == 1
    # Unknown kids in a burst: refused, and at most one refetch per interval.
    burst_started = time.monotonic()
    for _ in range(4):
        got = await refusal(server.url, rs(k2, "k2", "rotated"))
        assert got == refused("invalid_token", "unknown signing key (kid)")
    if time.monotonic() - burst_started < REFETCH_INTERVAL:
        assert jwks.fetches <= 2
    # Without a kid, and with an algorithm the key is not for.
    got = await refusal(server.url, rs(k1, None, "no-kid"))
    assert got == refused("invalid_token", "token has no kid")
    got = await refusal(server.url, rs(k1, "k1", "alg-swap", alg="RS384"))
    assert got == refused("invalid_token", "algorithm does not match the signing key")
    # Rotation: once k2 is published it is picked up on the next allowed refetch.
    jwks.keys = [public_jwk(k1, "k1"), public_jwk(k2, "k2")]
    fetches_before = jwks.fetches

    async def rotated_connects() -> bool:
        try:
            await clients(server.url, rs(k2, "k2", "rotated"), namespaces=["/"], wait_timeout=5)
        except socketio.exceptions.ConnectionError:
            return False
        return True

    await eventually(rotated_connects, timeout=REFETCH_INTERVAL + 8, interval=0.25)
    assert jwks.fetches <= fetches_before + 1
    assert_no_token_material(server.log(), [rs(k1, "k1", "jwks-user")])


async def _check_query_token(server: Proc, private: str, clients) -> None:
    token = jwt.encode(claims("query-user"), private, algorithm="RS256", headers={"kid": "k1"})
    client = await clients(f"{server.url}/?token={token}", None, namespaces=["/"])
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    # uvicorn's per-connection "[accepted]" line, which carried the URL, is dropped
    # (docs/operations.md); it would have been written before the connect completed.
    assert "[accepted]" not in server.log()
    assert_no_token_material(server.log(), [token])
    assert not re.search(r"token=eyJ", server.log())


async def test_no_disconnect_on_expiry_when_disabled(start_server, clients) -> None:
    server = start_server(base_config(auth={"disconnect_on_expiry": False}))
    short = claims("keeps-going", ttl=2)
    client = await clients(server.url, hs(short), namespaces=["/"])
    await eventually(lambda: time.time() > short["exp"] + 1.5, timeout=5)
    assert client.sio.connected
    assert (await client.call("ping", {}, namespace="/"))["ok"] is True
    assert client.events("auth:expired", "/") == []


async def test_jwks_fetch_does_not_block_the_event_loop(tmp_path: Path, clients) -> None:
    private = rsa_keypair()[0]
    with JwksServer() as jwks:
        jwks.keys = [public_jwk(private, "k1")]
        config = base_config(auth={"algorithms": ["HS256", "RS256"], "jwks_url": jwks.url})
        server = server_process(tmp_path, config).start()
        try:
            pinger = await clients(server.url, make_token("pinger"), namespaces=["/"])
            jwks.gate.clear()  # the JWKS endpoint now hangs until we let it answer
            token = jwt.encode(
                claims("jwks-user"), private, algorithm="RS256", headers={"kid": "k1"}
            )
            waiting = asyncio.ensure_future(clients(server.url, token, namespaces=["/"]))
            await eventually(lambda: jwks.fetches == 1)
            # While the server waits on the JWKS endpoint, it still serves others:
            # a fetch on the event loop would deadlock this ack until the gate opens.
            assert (await pinger.call("ping", {}, namespace="/", timeout=10))["ok"] is True
            assert not waiting.done()
            jwks.gate.set()
            connected = await asyncio.wait_for(waiting, 15)
            assert (await connected.call("ping", {}, namespace="/"))["ok"] is True
        finally:
            jwks.gate.set()
            server.stop()
