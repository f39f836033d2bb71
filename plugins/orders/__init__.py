"""The /orders namespace plugin."""

from sanic_rt.hookspecs import hookimpl
from sanic_rt.namespace import BaseNamespace


class OrdersNamespace(BaseNamespace):
    pass


@hookimpl
def register_namespaces(register):
    register("/orders", OrdersNamespace)
