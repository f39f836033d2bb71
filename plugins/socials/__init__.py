"""The /socials namespace plugin."""

from sanic_rt.hookspecs import hookimpl
from sanic_rt.namespace import BaseNamespace


class SocialsNamespace(BaseNamespace):
    pass


@hookimpl
def register_namespaces(register):
    register("/socials", SocialsNamespace)
