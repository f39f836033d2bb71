"""The /socials namespace: friends' presence without subscribing, and social events.

Each ``/socials`` connection follows the users in its own token's ``friends``
claim (through the ``follows`` hook, so another plugin can add a deployment's
own social graph); the core joins it to their presence rooms when it connects,
so ``presence:update`` arrives for them on every node, invisible users hidden.
``POST /api/v1/socials/events`` sends ``social:event`` to listed users.

``[plugins.socials] presence_visibility = "friends"`` restricts presence reads
(``presence:query`` and ``presence:subscribe``, on every namespace) to the ids
in the token's friends claim and the user themself, through the ``authorize``
hook; ``"everyone"`` (the default) leaves them open.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from sanic_rt.api import (
    BaseNamespace,
    Choice,
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

PATH = "/socials"
VISIBILITIES = ("everyone", "friends")
PRESENCE_READ = "presence.read"  # the authorize action of presence:query and presence:subscribe
log = logging.getLogger("sanic_rt.plugins.socials")
#: (claim, type) pairs already warned about: one line each, however many connections
_warned: set[tuple[str, str]] = set()


class SocialsNamespace(BaseNamespace):
    """Presence events come from the base class; the follows hook does the rest."""


@hookimpl
def configure(settings: dict[str, Any]) -> dict[str, Any]:
    return validate_settings(
        settings,
        {
            "friends_claim": Id(max_length=64, optional=True, default="friends"),
            "max_friends": Int(min_value=0, max_value=100_000, optional=True, default=1000),
            "max_user_ids": Int(min_value=1, max_value=100_000, optional=True, default=500),
            "presence_visibility": Choice(choices=VISIBILITIES, optional=True, default="everyone"),
        },
    )


@hookimpl
def register_namespaces(register: Any) -> None:
    register(PATH, SocialsNamespace)


@hookimpl
def follows(namespace: str, claims: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    if namespace != PATH:
        return []
    return _friends(claims, settings)


@hookimpl
def authorize(user: Any, action: str, settings: dict[str, Any]) -> Any:
    if action != PRESENCE_READ or settings["presence_visibility"] == "everyone":
        return None
    # The allowed ids; the core leaves the others out and lists them as forbidden.
    return {user.user_id, *_friends(user.claims, settings)}


def _friends(claims: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    name = settings["friends_claim"]
    friends = claims.get(name)
    if friends is None:
        return []
    if not isinstance(friends, list):
        # Say so: a string would otherwise look like "no friends online" to the user.
        warning = (name, type(friends).__name__)
        if warning not in _warned:
            _warned.add(warning)
            log.warning(
                "/socials: claim %r is a %s, not a list of ids: no presence followed", *warning
            )
        return []
    # The token is signed, so the list is trusted; the cap bounds rooms per connection.
    ids = [str(f) for f in friends if isinstance(f, str | int) and not isinstance(f, bool)]
    return ids[: settings["max_friends"]]


@hookimpl
def register_routes(register: Any, settings: dict[str, Any]) -> None:
    bp = Blueprint("sanic_rt_socials")

    @bp.post("/api/v1/socials/events")
    async def social_event(request: Request) -> HTTPResponse:
        payload = validate(
            json_body(request),
            {
                "user_ids": IdList(max_items=settings["max_user_ids"]),
                "type": Id(max_length=64),
                "data": Json(optional=True, default={}),
            },
        )
        event = {"type": payload["type"], "data": payload["data"], "at": time.time()}
        return await push_to_users(request, payload["user_ids"], PATH, "social:event", event)

    register(bp)
