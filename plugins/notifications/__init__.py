"""The /notifications namespace: notifications pushed over HTTP, read state synced.

``POST /api/v1/notifications`` sends ``notification:new`` to each listed
user's ``/notifications`` connections. ``notification:read`` from one device
tells the user's other connections, so every device clears the same badge.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from sanic_rt.api import (
    BaseNamespace,
    Id,
    IdList,
    Int,
    Json,
    Text,
    hookimpl,
    json_body,
    push_to_users,
    user_room,
    validate,
    validate_settings,
)

PATH = "/notifications"


class NotificationsNamespace(BaseNamespace):
    async def on_notification_read(self, sid: str, data: Any) -> dict[str, Any]:
        notification_id = validate(data, {"id": Id()})["id"]
        room = user_room(self.user(sid).user_id)
        await self.emit("notification:read", {"id": notification_id}, room=room, skip_sid=sid)
        return {"id": notification_id}


@hookimpl
def configure(settings: dict[str, Any]) -> dict[str, Any]:
    return validate_settings(
        settings,
        {
            "max_user_ids": Int(min_value=1, max_value=100_000, optional=True, default=500),
            "max_title_length": Int(min_value=1, max_value=100_000, optional=True, default=200),
            "max_body_length": Int(min_value=1, max_value=1_000_000, optional=True, default=4000),
        },
    )


@hookimpl
def register_namespaces(register: Any) -> None:
    register(PATH, NotificationsNamespace)


@hookimpl
def register_routes(register: Any, settings: dict[str, Any]) -> None:
    bp = Blueprint("sanic_rt_notifications")

    @bp.post("/api/v1/notifications")
    async def notify(request: Request) -> HTTPResponse:
        payload = validate(
            json_body(request),
            {
                "user_ids": IdList(max_items=settings["max_user_ids"]),
                "type": Id(max_length=64),
                "title": Text(max_length=settings["max_title_length"]),
                "body": Text(
                    min_length=0, max_length=settings["max_body_length"], optional=True, default=""
                ),
                "data": Json(optional=True, default={}),
            },
        )
        notification = {
            "id": uuid.uuid4().hex,
            "type": payload["type"],
            "title": payload["title"],
            "body": payload["body"],
            "data": payload["data"],
            "created_at": time.time(),
        }
        return await push_to_users(
            request, payload["user_ids"], PATH, "notification:new", notification
        )

    register(bp)
