"""The ``sanic-rt`` command: serve, check-config, plugins, token."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, ConfigError, load_config, masked
from .logs import configure_logging
from .plugin_manager import PluginError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sanic-rt", description="sanic-rt real-time gateway")
    parser.add_argument("--version", action="version", version=f"sanic-rt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML config file (none: dev mode)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; [server] host)")
    serve.add_argument("--port", type=int, help="TCP port (default 8000; [server] port)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (default 1); more than 1 needs a shared "
        'backend, [cluster] manager = "redis" and websocket-only clients',
    )
    serve.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper)
    serve.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="serve your own Sanic app with sanic-rt in it: sanic_rt.attach()'s result "
        "or a Sanic app (attached here with --config)",
    )

    check = sub.add_parser("check-config", help="validate a config and print it, secrets masked")
    check.add_argument("file", help="TOML config file; exit 2 with one line on errors")

    plugins = sub.add_parser("plugins", help="list discovered plugins")
    plugins.add_argument("--config")

    token = sub.add_parser("token", help="print a token the configured server accepts")
    token.add_argument("user_id")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (default 3600)")
    token.add_argument("--claim", action="append", default=[], metavar="KEY=VALUE")
    token.add_argument("--config")
    token.add_argument("--private-key", help="PEM private key for RS*/ES*/EdDSA")
    return parser


def _cli_overrides(args: argparse.Namespace) -> None:
    # Through the environment, so that uvicorn's worker processes see them too.
    for key in ("host", "port", "workers", "log_level"):
        value = getattr(args, key, None)
        if value is not None:
            # Plain text: a str key reads its environment value as text, as is
            # (JSON quoting made --host "127.0.0.1" the host '"127.0.0.1"').
            os.environ[f"SANIC_RT_SERVER__{key.upper()}"] = str(value)


def _dev_defaults(config: Config, path: str | None) -> Config:
    if path is not None:
        return config
    # No config file: the newcomer's dev server; allow any origin for local pages.
    server = config.server
    if not server.cors_allowed_origins:
        config = config.replace(server=replace(server, cors_allowed_origins=["*"]))
    return config


def _parse_claims(pairs: Sequence[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            # A usage error: exit 2 with one line, like argparse's own.
            print(f"sanic-rt token: --claim expects KEY=VALUE, got {pair!r}", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG)
        try:
            claims[key] = json.loads(raw)
        except json.JSONDecodeError:
            claims[key] = raw
    return claims


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    _cli_overrides(args)
    config = _dev_defaults(load_config(args.config), args.config)
    configure_logging(config.server.log_level, config.server.log_format)
    if args.config is None and args.app is None:
        s = config.server
        print(
            f"sanic-rt dev mode: http://{s.host}:{s.port}, in-memory presence, "
            "first-party plugins (chats, orders, notifications, socials).\n"
            "  token:   sanic-rt token alice\n"
            f"  connect: io('http://{s.host}:{s.port}/chats', {{auth: {{token}}}})",
            flush=True,
        )
    serve(config, args.config, args.app)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from .app import create_app

    config = load_config(args.file)
    create_app(config)  # the plugin, backend and deployment checks too
    print(json.dumps(masked(config), indent=2))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugin_manager import plugin_listing

    config = load_config(args.config)
    for info in plugin_listing(config):
        state = "enabled" if info.enabled else "disabled"
        print(f"{info.name} {info.version} [{info.group}] {state}")
        if info.error:
            print(f"  cannot load: {info.error}")
        if info.namespaces:
            print(f"  namespaces: {', '.join(info.namespaces)}")
        if info.routes:
            print(f"  routes: {', '.join(info.routes)}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from .auth import existing_dev_key, has_explicit_key, mint_token

    config = load_config(args.config)
    if not config.production and not has_explicit_key(config.auth) and not args.private_key:
        # Dev mode: the key of the dev server, wherever this is run from below it.
        config = config.replace(auth=replace(config.auth, secret=existing_dev_key()))
    private_key = None
    if args.private_key:
        try:
            private_key = Path(args.private_key).read_text()
        except OSError as err:
            raise ConfigError(args.private_key, "", f"unreadable ({err.strerror})") from None
    print(mint_token(config, args.user_id, args.ttl, _parse_claims(args.claim), private_key))
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "check-config": cmd_check_config,
    "plugins": cmd_plugins,
    "token": cmd_token,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, PluginError) as err:
        print(str(err).splitlines()[0], file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
