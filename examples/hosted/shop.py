"""An existing Sanic app (a shop's API) hosting sanic-rt: one process, one port.

Serve it with any ASGI server, or with sanic-rt's own serving::

    uvicorn shop:app --port 8000
    sanic-rt serve --app shop:app --port 8000

The shop keeps its routes, middleware, listeners and ``app.ctx``; sanic-rt adds
Socket.IO at ``/socket.io/`` and its HTTP API under ``/api/v1/``. The gateway's
config file is named by ``SHOP_REALTIME_CONFIG`` (none: dev mode).
"""

from __future__ import annotations

import os
from typing import Any

from sanic import HTTPResponse, Request, Sanic, json

from sanic_rt import attach, gateway_of, load_config

shop = Sanic("shop")


@shop.before_server_start
async def open_catalog(app: Sanic[Any, Any]) -> None:
    # The shop's own resources on app.ctx, next to sanic-rt's app.ctx.gateway.
    app.ctx.catalog = {"sku-1": {"name": "teapot", "seller": "alice"}}


@shop.on_response
async def tag_responses(request: Request, response: HTTPResponse) -> None:
    response.headers["x-served-by"] = "shop"


@shop.get("/products/<sku:str>")
async def product(request: Request, sku: str) -> HTTPResponse:
    item = request.app.ctx.catalog.get(sku)
    if item is None:
        return json({"error": "no such product"}, status=404)
    # The shop's route reads presence too: is the seller online to answer questions?
    seller_online = await gateway_of(request).presence.is_online(item["seller"])
    return json({"sku": sku, **item, "seller_online": seller_online})


#: What an ASGI server serves: Socket.IO in front of the shop's Sanic app.
app = attach(shop, load_config(os.environ.get("SHOP_REALTIME_CONFIG")))
