"""What the Socket.IO Admin UI learns about a user's connection: never the user's token.

python-socketio's Admin UI (``AsyncAdmin.serialize_socket``) sends every
connection's handshake to the UI: every ``HTTP_*`` key of the environ the
gateway keeps, and the parsed query string. A client that authenticates with
``Authorization: Bearer <jwt>`` (or ``?token=`` with ``allow_query_token``)
handed its JWT to whoever reads the Admin UI, read-only operators included,
who could then connect as that user until the token expires.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import base_config
from tests.support.clients import eventually, make_token
from tests.support.procs import Proc, server_process

ADMIN = {"username": "ops", "password": "correct-horse-battery"}


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    config = base_config(
        admin={"enabled": True, **ADMIN},
        auth={"allow_query_token": True},
    )
    proc = server_process(tmp_path_factory.mktemp("admin-handshake"), config).start()
    yield proc
    proc.stop()


def handshakes(admin: Any, user_namespace: str = "/chats") -> list[dict[str, Any]]:
    seen = []
    for batch in admin.events("all_sockets", "/admin"):
        seen += [s["handshake"] for s in batch if s["nsp"] == user_namespace]
    for args in admin.events("socket_connected", "/admin"):
        socket = args[0]
        if socket["nsp"] == user_namespace:
            seen.append(socket["handshake"])
    return seen


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_the_admin_ui_never_sees_a_users_bearer_token(admin_server, clients, transport):
    jwt = make_token("ada")
    admin = await clients(admin_server.url, None, namespaces=["/admin"], auth=ADMIN)
    await clients(
        admin_server.url,
        None,
        auth={},
        headers={"Authorization": f"Bearer {jwt}", "Cookie": "session=s3cr3t"},
        transports=[transport],
    )
    seen = await eventually(lambda: handshakes(admin))
    assert seen[0]["headers"].get("host")  # the handshake is there
    assert jwt not in repr(seen), seen
    assert "s3cr3t" not in repr(seen), seen


async def test_the_admin_ui_never_sees_a_query_token(admin_server, clients):
    jwt = make_token("bea")
    admin = await clients(admin_server.url, None, namespaces=["/admin"], auth=ADMIN)
    user = await clients(admin_server.url + f"?token={jwt}", None, auth={})
    assert (await user.call("ping", {}))["ok"]
    seen = await eventually(lambda: handshakes(admin))
    assert jwt not in repr(seen), seen
