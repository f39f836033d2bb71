"""A bare python-socketio server with the same /chats ``ping`` handler as sanic-rt.

No auth, presence or plugins: what python-socketio itself costs. Two modes:

- ``asgi``: sanic-rt's own serving mode -- ``socketio.ASGIApp`` under uvicorn with
  exactly sanic-rt's uvicorn settings (websockets-sansio, permessage-deflate off).
  That is also the fastest plain configuration measured (issue 2).
- ``sanic``: ``AsyncServer(async_mode="sanic")`` attached to a Sanic app, for reference.

Usage: ``python -m bench.bare asgi|sanic PORT`` (binds 127.0.0.1 only).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import socketio

HOST = "127.0.0.1"
PONG = {"ok": True, "data": {"status": "online"}}


class Chats(socketio.AsyncNamespace):
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        return True

    async def on_ping(self, sid: str, data: Any) -> dict[str, Any]:
        return PONG


def make_sio(async_mode: str) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(
        async_mode=async_mode, logger=False, engineio_logger=False, cors_allowed_origins=None
    )
    sio.register_namespace(Chats("/chats"))
    return sio


def serve_asgi(port: int) -> None:
    import uvicorn

    from sanic_rt.config import load_config
    from sanic_rt.server import uvicorn_config

    # sanic-rt's own uvicorn settings, so the only difference is our layers.
    config = load_config(None, env={})
    config = config.replace(server=replace(config.server, host=HOST, port=port))
    uvicorn.Server(uvicorn_config(config, socketio.ASGIApp(make_sio("asgi")))).run()


def serve_sanic(port: int) -> None:
    from sanic import Sanic, response

    app = Sanic("bare_sanic", configure_logging=False)
    make_sio("sanic").attach(app)

    @app.get("/health")
    async def health(request: Any) -> Any:
        return response.empty(status=200)

    app.run(host=HOST, port=port, single_process=True, access_log=False, motd=False)


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    {"asgi": serve_asgi, "sanic": serve_sanic}[mode](port)


if __name__ == "__main__":
    main()
