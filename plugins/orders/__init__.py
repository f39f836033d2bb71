"""The /orders namespace: order status pushed by the order service over HTTP.

``POST /api/v1/orders/{order_id}/events`` sends ``order:update`` to each
listed user's ``/orders`` connections, on every node. Clients only listen.
"""

from __future__ import annotations

import time
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from sanic_rt.api import (
    BaseNamespace,
    Id,
    IdList,
    Int,
    Json,
    hookimpl,
    json_body,
    push_to_users,
    validate,
    validate_settings,
)

PATH = "/orders"
DEFAULT_MAX_USER_IDS = 500


class OrdersNamespace(BaseNamespace):
    """No events of its own: ``ping`` and presence come from the base class."""


@hookimpl
def configure(settings: dict[str, Any]) -> dict[str, Any]:
    return validate_settings(
        settings,
        {
            "max_user_ids": Int(
                min_value=1, max_value=100_000, optional=True, default=DEFAULT_MAX_USER_IDS
            )
        },
    )


@hookimpl
def register_namespaces(register: Any) -> None:
    register(PATH, OrdersNamespace)


@hookimpl
def register_routes(register: Any, settings: dict[str, Any]) -> None:
    # A blueprint per app: one process may build several apps (tests).
    bp = Blueprint("sanic_rt_orders")

    @bp.post("/api/v1/orders/<order_id:str>/events")
    async def order_event(request: Request, order_id: str) -> HTTPResponse:
        Id().check(order_id, "order_id")
        payload = validate(
            json_body(request),
            {
                "user_ids": IdList(max_items=settings["max_user_ids"]),
                "status": Id(max_length=64),
                "data": Json(optional=True, default={}),
            },
        )
        event = {
            "order_id": order_id,
            "status": payload["status"],
            "data": payload["data"],
            "at": time.time(),
        }
        return await push_to_users(request, payload["user_ids"], PATH, "order:update", event)

    register(bp)
