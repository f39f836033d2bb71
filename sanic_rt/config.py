"""The one place that reads configuration.

A TOML file is read with ``tomllib``, environment overrides
``SANIC_RT_<SECTION>__<KEY>`` are laid over it, and the result is checked
against frozen dataclasses: unknown keys, wrong types and out-of-range values
raise :class:`ConfigError`, whose text is one line naming the file and key.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import unquote_plus, urlsplit, urlunsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "SANIC_RT_"
SECRET_KEYS = frozenset({"secret", "keys", "url", "password"})


class ConfigError(Exception):
    """Invalid configuration. ``str(err)`` is a single line for the user."""

    def __init__(self, source: str, key: str, expected: str) -> None:
        self.source, self.key, self.expected = source, key, expected
        where = f"{source}: {key}" if key else source
        super().__init__(f"config error: {where}: {expected}")


_T = TypeVar("_T")
_D = TypeVar("_D", bound="DataclassInstance")


def _opt(default: _T, doc: str, *, min: float | None = None, max: float | None = None) -> _T:
    meta = {"doc": doc, "min": min, "max": max}
    if isinstance(default, list | dict):
        # A fresh (shallow) copy per instance: a mutable default must not be shared.
        return field(default_factory=lambda: copy.copy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerConfig:
    mode: Literal["dev", "production"] = _opt("dev", "dev or production; required in a file")
    host: str = _opt("127.0.0.1", "address to bind")
    port: int = _opt(8000, "TCP port", min=0, max=65535)
    workers: int = _opt(1, "worker processes sharing the port", min=1, max=64)
    cors_allowed_origins: list[str] = _opt([], 'allowed Origins; [] = same origin, ["*"] = any')
    transports: list[str] = _opt(["polling", "websocket"], "Engine.IO transports")
    ping_interval: float = _opt(25.0, "Engine.IO ping interval, s", min=1, max=600)
    ping_timeout: float = _opt(20.0, "Engine.IO ping timeout, s", min=1, max=600)
    max_payload_bytes: int = _opt(1_000_000, "largest packet accepted", min=1024, max=100_000_000)
    max_request_bytes: int = _opt(
        1_000_000, "largest HTTP request body (413 over it)", min=1024, max=100_000_000
    )
    events_per_second: float = _opt(50.0, "per-connection rate limit", min=0.1, max=1_000_000)
    events_burst: int = _opt(100, "token bucket size", min=1, max=1_000_000)
    user_events_per_second: float = _opt(
        100.0, "per-user rate limit, all its connections on a node", min=0.1, max=1_000_000
    )
    user_events_burst: int = _opt(200, "per-user token bucket size", min=1, max=1_000_000)
    connect_timeout: float = _opt(
        10.0, "close an Engine.IO session with no namespace connection after, s", min=0.1, max=600
    )
    shutdown_timeout: float = _opt(5.0, "seconds to drain on SIGTERM", min=0, max=600)
    access_log: bool = _opt(False, "one log line per HTTP request and WebSocket")
    log_format: Literal["text", "json"] = _opt("text", '"text" or "json" (one object a line)')
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _opt("INFO", "least level logged")


@dataclass(frozen=True)
class AuthConfig:
    algorithms: list[str] = _opt(["HS256"], "allowed JWT algorithms")
    secret: str = _opt("", "HS* shared secret")
    secret_file: str = _opt("", "file holding the HS* secret")
    public_key_file: str = _opt("", "PEM public key for RS*/ES*/EdDSA")
    jwks_url: str = _opt("", "JWKS endpoint; keys chosen by kid")
    jwks_refetch_interval: float = _opt(60.0, "min seconds between JWKS refetches", min=0)
    issuer: str = _opt("", "required iss, if set")
    audience: str = _opt("", "required aud, if set")
    leeway: float = _opt(0.0, "clock skew allowed, s", min=0, max=3600)
    user_claim: str = _opt("sub", "claim holding the user id")
    required_claims: list[str] = _opt(["exp"], "claims every token must carry")
    allow_query_token: bool = _opt(False, "accept ?token= (URLs end up in logs)")
    disconnect_on_expiry: bool = _opt(True, "disconnect when the token expires")
    max_connections_per_user: int = _opt(50, "namespace connections per user", min=1)


@dataclass(frozen=True)
class RedisConfig:
    url: str = _opt(
        "redis://127.0.0.1:6379/0",
        "redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://",
    )
    key_prefix: str = _opt("sanic_rt", "prefix of every key")
    index_shards: int = _opt(16, "shards of the online index", min=1, max=1024)
    pool_size: int = _opt(32, "max connections in the pool", min=1, max=10_000)
    timeout: float = _opt(1.0, "per-call timeout, s", min=0.01, max=60)
    connect_timeout: float = _opt(1.0, "connect timeout, s", min=0.01, max=60)


@dataclass(frozen=True)
class MemcachedConfig:
    servers: list[str] = _opt(["127.0.0.1:11211"], "host:port list on a fixed ring")
    key_prefix: str = _opt("sanic_rt", "prefix of every key")
    index_buckets: int = _opt(64, "buckets of the online index", min=1, max=4096)
    pool_size: int = _opt(8, "connections per server", min=1, max=1024)
    threads: int = _opt(8, "threads running blocking calls", min=1, max=256)
    timeout: float = _opt(1.0, "per-call timeout, s", min=0.01, max=60)
    max_cas_retries: int = _opt(16, "cas attempts before unavailable", min=1, max=1000)


@dataclass(frozen=True)
class Timings:
    """Presence timings in seconds: the one home of the ``[presence]`` timing keys.

    :class:`PresenceConfig` is a ``Timings`` (the app hands the ``[presence]``
    section itself to the backend), so a backend, the presence API and the
    Lua script all read the same values. Tests build one directly, e.g.
    ``Timings(ttl=10, offline_grace=5, idle_timeout=100)``.
    """

    ttl: float = _opt(60.0, "connection entry lifetime after a refresh, s", min=1)
    offline_grace: float = _opt(5.0, "delay before offline is announced, s", min=0)
    idle_timeout: float = _opt(300.0, "inactivity before auto away, s", min=1)
    sweep_interval: float = _opt(5.0, "how often expired users are settled, s", min=0.05)
    node_ttl: float = _opt(10.0, "a node is dead this long after its last beat, s", min=1)


@dataclass(frozen=True)
class PresenceConfig(Timings):
    """The ``[presence]`` section: its :class:`Timings`, the backend and the limits."""

    backend: str = _opt("memory", "memory, redis, memcached or a plugin's")
    refresh_batch_size: int = _opt(500, "connections per refresh round trip", min=1)
    batches_in_flight: int = _opt(
        1, "round trips of coalesced heartbeats (and of connects) at once", min=1, max=64
    )
    max_subscriptions: int = _opt(1000, "presence subscriptions per connection", min=1)
    max_subscriptions_per_user: int = _opt(
        5000, "presence subscriptions per user, its connections on a node", min=1
    )
    record_ttl: float = _opt(2_592_000.0, "how long an offline record is kept, s", min=60)
    max_pending_disconnects: int = _opt(
        10_000, "disconnects kept per node while storage is down", min=1
    )
    max_status_changes_per_minute: int = _opt(
        30, "presence:set_status per user and node (burst as many)", min=1, max=100_000
    )
    redis: RedisConfig = field(default_factory=RedisConfig)
    memcached: MemcachedConfig = field(default_factory=MemcachedConfig)


@dataclass(frozen=True)
class ClusterConfig:
    manager: Literal["", "redis", "redis-streams", "memcached"] = _opt(
        "", '"" (one process), "redis" (pub/sub) or "redis-streams"'
    )
    url: str = _opt("", "manager URL; default the presence Redis URL")
    channel: str = _opt("sanic_rt", "pub/sub channel; prefix of the stream's keys")
    timeout: float = _opt(1.0, "seconds an emit through the manager may take", min=0.01, max=60)
    stream_maxlen: int = _opt(
        10_000, "redis-streams: entries kept in the bus stream (approximate)", min=100
    )
    routing: Literal["broadcast", "targeted"] = _opt(
        "broadcast", "redis-streams: every node reads every emit, or only its rooms'"
    )


@dataclass(frozen=True)
class RecoveryConfig:
    enabled: bool = _opt(False, "connection state recovery for clients sending recover: true")
    max_disconnection: float = _opt(
        120.0, "how long a dropped connection's session is kept, s", min=1, max=86_400
    )
    max_log_events: int = _opt(
        10_000, "single process: events kept for recovery", min=100, max=10_000_000
    )
    max_sessions: int = _opt(
        100_000, "dropped connections' sessions kept, all users; the oldest go", min=1
    )


@dataclass(frozen=True)
class PluginsConfig:
    enabled: list[str] | None = _opt(None, "plugins to load; default all first-party")
    settings: dict[str, dict[str, Any]] = _opt({}, "[plugins.<name>] tables")


@dataclass(frozen=True)
class ApiConfig:
    keys: list[str] = _opt([], "server-to-server API keys")
    keys_file: str = _opt("", "file with one API key a line")


@dataclass(frozen=True)
class EventStreamConfig:
    enabled: bool = _opt(False, "append presence events to a Redis stream (Redis backend)")
    key: str = _opt("", 'stream key; "" = <presence.redis.key_prefix>:events (one per shard)')
    maxlen: int = _opt(100_000, "entries kept, all shard streams together (approximate)", min=1)


@dataclass(frozen=True)
class WebhookConfig:
    url: str = _opt("", 'POST presence events here (http or https); "" = off')
    secret: str = _opt("", "HMAC-SHA256 signing secret")
    secret_file: str = _opt("", "file holding the signing secret")
    timeout: float = _opt(5.0, "seconds one POST may take", min=0.1, max=600)
    max_attempts: int = _opt(10, "attempts per batch before it is dropped", min=1)
    batch_max: int = _opt(100, "events per POST", min=1, max=10_000)
    retry_backoff: float = _opt(1.0, "first retry delay, s (doubles, with jitter)", min=0.001)
    retry_backoff_max: float = _opt(60.0, "longest retry delay, s", min=0.001)
    claim_after: float = _opt(30.0, "idle s before another node takes over a batch", min=0.1)
    group: str = _opt("sanic-rt-webhook", "consumer group of the senders (Redis backend)")
    queue_max: int = _opt(10_000, "in-process queue cap (memory, memcached)", min=1)


@dataclass(frozen=True)
class EventsConfig:
    stream: EventStreamConfig = field(default_factory=EventStreamConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)

    def stream_enabled(self) -> bool:
        """A webhook always reads the stream when there is one (the Redis backend)."""
        return self.stream.enabled or bool(self.webhook.url)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = _opt(True, "Prometheus metrics at path")
    path: str = _opt("/metrics", "where metrics are served (API key in production)")
    stats_interval: float = _opt(10.0, "seconds between online-user counts", min=1, max=3600)


@dataclass(frozen=True)
class AdminConfig:
    enabled: bool = _opt(False, "Socket.IO Admin UI: namespace /admin, files at /admin-ui/")
    username: str = _opt("admin", "Admin UI user name")
    password: str = _opt("", "Admin UI password (>= 12 characters in production)")
    password_file: str = _opt("", "file holding the Admin UI password")
    read_only: bool = _opt(True, "Admin UI may only look, not disconnect or join rooms")


@dataclass(frozen=True)
class DashboardConfig:
    enabled: bool = _opt(True, "presence dashboard page (data needs an API key)")
    path: str = _opt("/dashboard", "where the dashboard page is served")


class ConfigSections(TypedDict, total=False):
    """The keyword arguments of :meth:`Config.replace`: whole sections by name."""

    server: ServerConfig
    auth: AuthConfig
    presence: PresenceConfig
    cluster: ClusterConfig
    recovery: RecoveryConfig
    plugins: PluginsConfig
    api: ApiConfig
    events: EventsConfig
    metrics: MetricsConfig
    admin: AdminConfig
    dashboard: DashboardConfig


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    source: str = "<defaults>"

    @property
    def production(self) -> bool:
        """Whether ``[server] mode`` is ``production``."""
        return self.server.mode == "production"

    def replace(self, **sections: Unpack[ConfigSections]) -> Config:
        """A copy with whole sections replaced (``config.replace(server=...)``)."""
        return dataclasses.replace(self, **sections)


FIRST_PARTY_PLUGINS = ("chats", "orders", "notifications", "socials")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read ``path`` (or defaults), then env overrides, then ``overrides``.

    ``overrides`` maps dotted keys (``"server.port"``) to values, for CLI flags.
    """
    env = os.environ if env is None else env
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(source, "", f"cannot read file ({err.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(source, "", "not UTF-8 text") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(source, "", f"invalid TOML ({err})") from None
        if not isinstance(raw.get("server", {}), dict):
            raise ConfigError(source, "server", "expected a table")
        if "mode" not in raw.get("server", {}):
            raise ConfigError(source, "server.mode", 'required: "dev" or "production"')
    env_values = _env_overrides(env)
    for key, value in env_values:
        _set_dotted(raw, key, value, source)
    for key, override in (overrides or {}).items():
        _set_dotted(raw, key, override, source)
    _move_plugin_tables(raw, source)
    try:
        config = _build(Config, raw, "", source)
    except ConfigError as err:
        raise _name_env_variable(err, env_values) from None
    return dataclasses.replace(config, source=source)


class EnvText(str):
    """An environment value, read as the type its key wants once that is known."""

    variable: str = ""


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, EnvText]]:
    found = []
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        value = EnvText(text)
        value.variable = name
        found.append((dotted, value))
    return sorted(found)


def _name_env_variable(err: ConfigError, env_values: list[tuple[str, EnvText]]) -> ConfigError:
    """The error named after the environment variable that caused it, if one did.

    ``SANIC_RT_SERVER__PORT: expected int, got 'abc'``: the file never had that value.
    """
    for dotted, value in env_values:
        if dotted == err.key or dotted.startswith(err.key + "."):
            expected, got, _ = err.expected.rpartition(", got ")
            if not got:  # no value in the message
                expected = err.expected
            elif dotted.rpartition(".")[2] not in SECRET_KEYS:
                expected += f", got {str(value)!r}"  # the text as typed, not its parsed type
            if dotted != err.key:
                expected = f"{err.key}: {expected}"
            return ConfigError(value.variable, "", expected)
    return err


def _parse_env_value(text: str) -> object:
    """A TOML value if it parses as one (``8001``, ``true``, ``["a"]``), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _wants_text(hint: object) -> bool:
    # A secret like 2024-01-01 or 0123 must stay the string it was, not a date or int.
    if hint is str:
        return True
    return typing.get_origin(hint) is Literal and all(
        isinstance(a, str) for a in typing.get_args(hint)
    )


def _set_dotted(raw: dict[str, Any], dotted: str, value: object, source: str) -> None:
    parts = dotted.split(".")
    table = raw
    for part in parts[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(source, dotted, f"{part} is not a table")
    table[parts[-1]] = value


def _move_plugin_tables(raw: dict[str, Any], source: str) -> None:
    plugins = raw.get("plugins")
    if not isinstance(plugins, dict):
        return
    settings = {k: plugins.pop(k) for k in list(plugins) if isinstance(plugins[k], dict)}
    plugins["settings"] = settings


def _build(cls: type[_D], raw: object, prefix: str, source: str) -> _D:
    if not isinstance(raw, dict):
        raise ConfigError(source, prefix.rstrip("."), "expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        what = "section" if cls is Config else "key"
        raise ConfigError(
            source, prefix + unknown[0], f"unknown {what} (known: {', '.join(fields)})"
        )
    values: dict[str, object] = {}
    for name, value in raw.items():
        key = prefix + name
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, key + ".", source)
        else:
            values[name] = _check(value, hint, fields[name].metadata, key, source)
    return cls(**values)


def _check(value: object, hint: Any, meta: Mapping[str, Any], key: str, source: str) -> object:
    if isinstance(value, EnvText):
        value = str(value) if _wants_text(hint) else _parse_env_value(value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(source, key, f"expected one of {', '.join(map(repr, args))}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(value, inner, meta, key, source)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, args[0]) for v in value):
            raise ConfigError(source, key, f"expected a list of {args[0].__name__}")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, "expected a table")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(source, key, f"expected {hint.__name__}, got {type(value).__name__}")
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(source, key, f"expected a value {span}, got {value}")
    return value


def enabled_plugins(config: Config) -> list[str]:
    enabled = config.plugins.enabled
    return list(FIRST_PARTY_PLUGINS) if enabled is None else list(enabled)


def masked(config: Config) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced by ``"***"``."""

    def mask(table: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                out[key] = mask(value)
            elif key in SECRET_KEYS and value:
                out[key] = _mask_value(key, value)
            else:
                out[key] = value
        return out

    data = dataclasses.asdict(config)
    data.pop("source")
    return mask(data)


def _mask_value(key: str, value: object) -> object:
    if key == "url" and isinstance(value, str):
        return _mask_url(value)
    if isinstance(value, list):
        return ["***"] * len(value)
    return "***"


#: Query parameters that carry credentials: redis-py passes every query
#: parameter on as a connection argument (``password``, ``username``, ``ssl_password``).
_CREDENTIAL_PARAM_PARTS = ("password", "username", "secret", "token")


def _mask_url(url: str) -> str:
    """``url`` with its credentials as ``***``: the userinfo and credential query values.

    The host, port, path and other parameters stay: they are useful when debugging.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(_mask_param(param) for param in parts.query.split("&"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_param(param: str) -> str:
    name, sep, _value = param.partition("=")
    # Compared as redis-py reads it: percent-decoded (``pass%77ord`` is ``password``).
    if sep and any(part in unquote_plus(name).lower() for part in _CREDENTIAL_PARAM_PARTS):
        return f"{name}=***"
    return param


def documented_keys() -> list[tuple[str, object, str]]:
    """(dotted key, default, doc) for every key; the example file is tested against it."""
    out: list[tuple[str, object, str]] = []

    def walk(cls: type[DataclassInstance], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "source":
                continue
            hint = hints[f.name]
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                walk(hint, prefix + f.name + ".")
            elif f.name != "settings":
                default: object
                if f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                else:
                    raise TypeError(f"{prefix}{f.name} has no default")
                out.append((prefix + f.name, default, f.metadata.get("doc", "")))

    walk(Config, "")
    return out
