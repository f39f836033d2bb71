"""The /chats namespace: conversations, messages, typing and read receipts.

A connection joins a conversation's room (``conv:<id>``) with ``chat:join``;
who may join is decided by the ``authorize`` hook (action ``"join"``, resource
the conversation id), so a deployment can add its own policy in a plugin. The
built-in policy is ``[plugins.chats] membership``: ``"claim"`` admits only the
ids in the token's ``conversations`` claim, ``"open"`` admits anyone.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sanic_rt.api import (
    AckError,
    BackendUnavailable,
    BaseNamespace,
    Bool,
    Choice,
    Gateway,
    Id,
    Int,
    Text,
    hookimpl,
    validate,
    validate_settings,
)

PATH = "/chats"
MEMBERSHIPS = ("claim", "open")
DEFAULT_MAX_TEXT_LENGTH = 4000
DEFAULT_MAX_CONVERSATIONS = 500
ROOM_PREFIX = "conv:"


def conversation_room(conversation_id: str) -> str:
    return f"{ROOM_PREFIX}{conversation_id}"


#: Namespace of message ids derived from a client_id (any fixed UUID would do).
_MESSAGE_IDS = uuid.UUID("5d1c4d4e-3b9a-4c5e-9a57-2f0d8c6e7b10")


def message_id(sender_id: str, conversation_id: str, client_id: str | None) -> str:
    """The message's id: the same for every retry of one ``client_id``, else random.

    A retry after an ``unavailable`` ack may duplicate a message that other
    nodes got anyway (a stalled bus); receivers drop an id they already have.
    """
    if client_id is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_MESSAGE_IDS, f"{sender_id}\0{conversation_id}\0{client_id}").hex


class ChatsNamespace(BaseNamespace):
    def __init__(self, namespace: str, gateway: Gateway, settings: Any = None) -> None:
        super().__init__(namespace, gateway, settings)
        # Built once, at registration: a wrong option stops start-up, not the first message.
        self.message_fields = {
            "text": Text(max_length=self.settings["max_text_length"]),
            "client_id": Id(optional=True),
        }

    def _joined(self, sid: str, data: Any, **fields: Any) -> dict[str, Any]:
        """Validate ``data`` and require that this connection joined its conversation."""
        payload = validate(data, {"conversation_id": Id(), **fields})
        if not self.in_room(sid, conversation_room(payload["conversation_id"])):
            raise AckError("forbidden", "join the conversation first", field="conversation_id")
        return payload

    async def on_chat_join(self, sid: str, data: Any) -> dict[str, Any]:
        conversation_id = validate(data, {"conversation_id": Id()})["conversation_id"]
        await self.authorize(sid, "join", conversation_id)
        room = conversation_room(conversation_id)
        limit = self.settings["max_conversations_per_connection"]
        if not self.in_room(sid, room) and self._joined_count(sid) >= limit:
            raise AckError(
                "bad_request", f"at most {limit} conversations joined", field="conversation_id"
            )
        await self.enter_room(sid, room)
        return {"conversation_id": conversation_id}

    def _joined_count(self, sid: str) -> int:
        # rooms(sid) costs as many as this connection's own rooms (sanic_rt/room_index.py).
        return sum(1 for room in self.rooms(sid) if room.startswith(ROOM_PREFIX))

    async def on_chat_leave(self, sid: str, data: Any) -> dict[str, Any]:
        conversation_id = validate(data, {"conversation_id": Id()})["conversation_id"]
        await self.leave_room(sid, conversation_room(conversation_id))
        return {"conversation_id": conversation_id}

    async def on_chat_message(self, sid: str, data: Any) -> dict[str, Any]:
        payload = self._joined(sid, data, **self.message_fields)
        if not payload["text"].strip():
            raise AckError("bad_request", "text: must not be empty", field="text")
        sender_id = self.user(sid).user_id
        message = {
            "id": message_id(sender_id, payload["conversation_id"], payload["client_id"]),
            "conversation_id": payload["conversation_id"],
            "sender_id": sender_id,
            "text": payload["text"],
            "sent_at": time.time(),
            "client_id": payload["client_id"],
        }
        # Everyone in the room but this connection, which has the ack instead;
        # the sender's other devices that joined the conversation get it too.
        await self.emit(
            "chat:message",
            message,
            room=conversation_room(message["conversation_id"]),
            skip_sid=sid,
        )
        return {"id": message["id"], "sent_at": message["sent_at"]}

    async def on_chat_typing(self, sid: str, data: Any) -> dict[str, Any]:
        payload = self._joined(sid, data, typing=Bool())
        user_id = self.user(sid).user_id
        # "The others": skip every connection of the typist on this namespace,
        # cluster-wide (presence knows them all), not just this one.
        try:
            record = await self.presence.get(user_id)
            own = [s for s, namespace in record.sids if namespace == self.namespace] or [sid]
        except BackendUnavailable:
            own = [sid]  # typing is best effort: better an echo to own devices than nothing
        event = {
            "conversation_id": payload["conversation_id"],
            "user_id": user_id,
            "typing": payload["typing"],
        }
        await self.emit(
            "chat:typing", event, room=conversation_room(event["conversation_id"]), skip_sid=own
        )
        return {"conversation_id": event["conversation_id"], "typing": event["typing"]}

    async def on_chat_read(self, sid: str, data: Any) -> dict[str, Any]:
        payload = self._joined(sid, data, message_id=Id())
        event = {
            "conversation_id": payload["conversation_id"],
            "user_id": self.user(sid).user_id,
            "message_id": payload["message_id"],
        }
        await self.emit(
            "chat:read", event, room=conversation_room(event["conversation_id"]), skip_sid=sid
        )
        return {"conversation_id": event["conversation_id"], "message_id": event["message_id"]}


@hookimpl
def configure(settings: dict[str, Any], config: Any) -> dict[str, Any]:
    default_membership = "claim" if config.production else "open"
    return validate_settings(
        settings,
        {
            "membership": Choice(choices=MEMBERSHIPS, optional=True, default=default_membership),
            "max_text_length": Int(
                min_value=1, max_value=1_000_000, optional=True, default=DEFAULT_MAX_TEXT_LENGTH
            ),
            "max_conversations_per_connection": Int(
                min_value=1, max_value=1_000_000, optional=True, default=DEFAULT_MAX_CONVERSATIONS
            ),
        },
    )


@hookimpl
def register_namespaces(register: Any) -> None:
    register(PATH, ChatsNamespace)


@hookimpl
def authorize(user: Any, namespace: str, action: str, resource: Any, settings: Any) -> Any:
    if namespace != PATH or action != "join" or settings["membership"] == "open":
        return None
    conversations = user.claims.get("conversations")
    return isinstance(conversations, list) and resource in {str(c) for c in conversations}
