"""The /chats namespace plugin."""

from sanic_rt.hookspecs import hookimpl
from sanic_rt.namespace import BaseNamespace


class ChatsNamespace(BaseNamespace):
    pass


@hookimpl
def register_namespaces(register):
    register("/chats", ChatsNamespace)
