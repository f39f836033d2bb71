"""The /notifications namespace plugin."""

from sanic_rt.hookspecs import hookimpl
from sanic_rt.namespace import BaseNamespace


class NotificationsNamespace(BaseNamespace):
    pass


@hookimpl
def register_namespaces(register):
    register("/notifications", NotificationsNamespace)
