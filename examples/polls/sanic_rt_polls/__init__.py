"""Live polls on ``/polls``: an example third-party sanic-rt plugin.

It shows every kind of hook a plugin usually needs:

- ``configure`` validates ``[plugins.polls]`` (``creators``, ``max_options``);
- ``register_namespaces`` adds ``/polls`` (``poll:create``, ``poll:vote``,
  ``poll:results``), a :class:`BaseNamespace` subclass;
- ``register_routes`` adds ``GET /api/v1/polls/{poll_id}`` for servers;
- ``authorize`` lets only ``creators`` create polls (when the list is set);
- ``follows`` makes every ``/polls`` connection follow the creators' presence.

Polls live in the namespace object, so in one process only: a real plugin
would keep them in its own database.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from sanic_rt.api import (
    AckError,
    AuthenticatedUser,
    BaseNamespace,
    Gateway,
    Id,
    IdList,
    Int,
    RegisterNamespace,
    RegisterRoutes,
    Text,
    envelope,
    hookimpl,
    namespace_of,
    validate,
    validate_settings,
)

PATH = "/polls"


def poll_room(poll_id: str) -> str:
    return f"poll:{poll_id}"


@dataclass
class Poll:
    id: str
    creator_id: str
    question: str
    options: list[str]
    created_at: float = field(default_factory=time.time)
    votes: dict[str, str] = field(default_factory=dict)  # user id -> option

    def results(self) -> dict[str, Any]:
        counts = dict.fromkeys(self.options, 0)
        for option in self.votes.values():
            counts[option] += 1
        return {
            "poll_id": self.id,
            "question": self.question,
            "counts": counts,
            "votes": len(self.votes),
        }


VOTE = {"poll_id": Id(), "option": Id()}
RESULTS = {"poll_id": Id()}


class PollsNamespace(BaseNamespace):
    def __init__(self, namespace: str, gateway: Gateway, settings: Any = None) -> None:
        super().__init__(namespace, gateway, settings)
        self.polls: dict[str, Poll] = {}
        # Built at registration, so a wrong field option stops start-up.
        self.create_fields = {
            "question": Text(max_length=300),
            "options": IdList(max_items=self.settings["max_options"]),
        }

    def poll(self, poll_id: str) -> Poll:
        if poll_id not in self.polls:
            raise AckError("not_found", f"no poll {poll_id}", field="poll_id")
        return self.polls[poll_id]

    async def on_poll_create(self, sid: str, data: Any) -> dict[str, Any]:
        payload = validate(data, self.create_fields)
        if len(payload["options"]) < 2:
            raise AckError("bad_request", "options: at least 2 different", field="options")
        await self.authorize(sid, "create", None)
        poll = Poll(
            uuid.uuid4().hex, self.user(sid).user_id, payload["question"], payload["options"]
        )
        self.polls[poll.id] = poll
        await self.enter_room(sid, poll_room(poll.id))
        return {"id": poll.id, "question": poll.question, "options": poll.options}

    async def on_poll_vote(self, sid: str, data: Any) -> dict[str, Any]:
        payload = validate(data, VOTE)
        poll = self.poll(payload["poll_id"])
        if payload["option"] not in poll.options:
            raise AckError("bad_request", "option: not one of the poll's", field="option")
        poll.votes[self.user(sid).user_id] = payload["option"]  # a new vote replaces the old
        await self.enter_room(sid, poll_room(poll.id))
        results = poll.results()
        await self.emit("poll:results", results, room=poll_room(poll.id))
        return results

    async def on_poll_results(self, sid: str, data: Any) -> dict[str, Any]:
        poll = self.poll(validate(data, RESULTS)["poll_id"])
        await self.enter_room(sid, poll_room(poll.id))  # watch it from now on
        return poll.results()


@hookimpl
def configure(settings: dict[str, Any]) -> dict[str, Any]:
    return validate_settings(
        settings,
        {
            "creators": IdList(max_items=1000, optional=True, default=[]),
            "max_options": Int(min_value=2, max_value=50, optional=True, default=10),
        },
    )


@hookimpl
def register_namespaces(register: RegisterNamespace) -> None:
    register(PATH, PollsNamespace)


@hookimpl
def register_routes(register: RegisterRoutes) -> None:
    bp = Blueprint("sanic_rt_polls")

    @bp.get("/api/v1/polls/<poll_id:str>")
    async def poll_results(request: Request, poll_id: str) -> HTTPResponse:
        namespace = namespace_of(request, PATH, PollsNamespace)
        return envelope(namespace.poll(poll_id).results())

    register(bp)


@hookimpl
def authorize(
    user: AuthenticatedUser, namespace: str, action: str, settings: dict[str, Any]
) -> bool | None:
    if namespace != PATH or action != "create" or not settings["creators"]:
        return None
    return user.user_id in settings["creators"]


@hookimpl
def follows(namespace: str, settings: dict[str, Any]) -> list[str]:
    return list(settings["creators"]) if namespace == PATH else []
