"""JWT authentication: where a token comes from, how it is verified, who it names.

The user id the server acts on comes from the verified token only. Nothing
here logs or echoes token material.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote_plus

import jwt

from .config import AuthConfig, Config, ConfigError

if TYPE_CHECKING:
    # A runtime name only from PyJWT 2.12; before, it exists for type checkers alone.
    from jwt.algorithms import AllowedPublicKeys

log = logging.getLogger("sanic_rt.auth")

MAX_TOKEN_BYTES = 8192
MAX_USER_ID_LEN = 128
DEV_KEY_PATH = Path(".sanic-rt") / "dev.key"
HMAC_PREFIX = "HS"

#: What ``jwt.decode`` verifies with: a ``cryptography`` public key (from a
#: JWKS), the HS* secret or a PEM text, or an ``oct`` JWK's raw bytes.
VerificationKey: TypeAlias = "AllowedPublicKeys | str | bytes"


class AuthError(Exception):
    """A refused token. ``code`` is one of the documented refusal codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class AuthenticatedUser:
    """Who a connection is: ``user_id``, the verified token's ``claims``, ``exp``,
    ``connected_at`` (epoch seconds) and ``device`` (from the handshake)."""

    user_id: str
    claims: dict[str, Any] = field(repr=False)
    exp: float | None
    connected_at: float
    device: str = ""


def token_from_handshake(environ: Mapping[str, Any], auth: object, allow_query: bool) -> str:
    """The token, by source in order: ``auth`` payload, ``Authorization`` header, ``?token=``.

    An empty ``auth.token`` counts as absent: a signed-out web app typically
    sends ``{token: ""}``, and ``missing_token`` tells it more than
    ``invalid_token`` would.
    """
    if isinstance(auth, dict) and auth.get("token") not in (None, ""):
        token = auth["token"]
        if not isinstance(token, str):
            raise AuthError("invalid_token", "auth.token must be a string")
        return token
    header: str = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query:
        token = _query_token(environ.get("QUERY_STRING", ""))
        if token:
            return token
    raise AuthError("missing_token", "no token: pass auth {token} or an Authorization header")


def _query_token(query: str) -> str:
    """The value of the literally spelled ``token`` parameter.

    Only the literal name counts: ``%74oken`` decodes to ``token`` too, and a
    name spelled so would slip past any redaction that matched it as typed.
    """
    for param in query.split("&"):
        name, sep, value = param.partition("=")
        if name == "token" and sep:
            return unquote_plus(value)
    return ""


# A query parameter as it appears in a logged URL: (separator+name=)(value).
_QUERY_PARAM = re.compile(r"([?&]([^=&\s\"'?]+)=)([^&\s\"']*)")


class RedactQueryToken(logging.Filter):
    """Blank ``token=`` query values in log records (uvicorn logs websocket URLs).

    uvicorn logs every websocket handshake as ``"WebSocket /socket.io/?...``
    at info level, query string included; with ``allow_query_token`` that
    would put the token in the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        elif isinstance(record.args, dict):  # logging's "%(name)s" style
            record.args = {k: _redact(v) for k, v in record.args.items()}
        record.msg = _redact(record.msg)
        return True


def _redact(value: object) -> object:
    if isinstance(value, str) and "=" in value:
        return _QUERY_PARAM.sub(_redact_param, value)
    return value


def _redact_param(match: re.Match[str]) -> str:
    # Decoded before comparing, so that every spelling of the name is caught
    # (``%74oken``, ``TOKEN``), whether or not the server accepts it.
    if unquote_plus(match.group(2)).lower() == "token":
        return match.group(1) + "[redacted]"
    return match.group(0)


def install_log_redaction() -> None:
    """Attach :class:`RedactQueryToken` to the loggers that print request URLs (idempotent)."""
    for name in ("uvicorn.error", "uvicorn.access", "sanic.access", "sanic.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryToken) for f in logger.filters):
            logger.addFilter(RedactQueryToken())


def device_from_handshake(auth: object) -> str:
    """The client's self-declared device label (informational only, never identity)."""
    device = auth.get("device") if isinstance(auth, dict) else None
    return device[:64] if isinstance(device, str) else ""


def dev_key() -> str:
    """The dev-mode signing key in ``.sanic-rt/dev.key``, created once with mode 0600.

    The dev server creates it in its directory. O_EXCL makes creation race-free
    when two start at once: the loser reads the winner's key.
    """
    if not DEV_KEY_PATH.exists():
        DEV_KEY_PATH.parent.mkdir(mode=0o700, exist_ok=True)
        key = secrets.token_urlsafe(48)
        try:
            fd = os.open(DEV_KEY_PATH, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(key + "\n")
            return key
    return _read_dev_key(DEV_KEY_PATH)


def existing_dev_key(start: Path | None = None) -> str:
    """The dev server's key for ``sanic-rt token``: ``.sanic-rt/dev.key`` here or in a parent.

    Never creates one: a token signed with a new key would be refused by the
    server already running with its own.
    """
    start = (start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / DEV_KEY_PATH).is_file():
            return _read_dev_key(directory / DEV_KEY_PATH)
    raise ConfigError(
        "sanic-rt token",
        "",
        f"no dev key ({DEV_KEY_PATH}) in {start} or its parents: start the dev server "
        "(sanic-rt serve) first, run this where it runs, or pass --config",
    )


def _read_dev_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ConfigError(str(path), "", "empty dev key file: delete it to make a new one")
    return key


def has_explicit_key(auth: AuthConfig) -> bool:
    """Whether the config names a signing key (production refuses the dev key)."""
    return bool(auth.secret or auth.secret_file or auth.public_key_file or auth.jwks_url)


def hmac_secret(config: Config) -> str:
    """The HS* secret: ``secret``, ``secret_file``, else (dev only) the dev key; "" for none."""
    auth = config.auth
    if auth.secret:
        return auth.secret
    if auth.secret_file:
        try:
            return Path(auth.secret_file).read_text().strip()
        except OSError as err:
            raise ConfigError(
                config.source, "auth.secret_file", f"unreadable ({err.strerror})"
            ) from None
    if auth.public_key_file or auth.jwks_url:
        return ""
    return dev_key() if not config.production else ""


def _read_key_file(config: Config, key: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise ConfigError(config.source, key, f"unreadable ({err.strerror})") from None


class JwksCache:
    """Keys from a JWKS URL by ``kid``; fetched in a thread, refetched at most every interval.

    An unknown ``kid`` triggers a refetch (key rotation), but at most once per
    ``refetch_interval``: otherwise a client sending random kids would make us
    hammer the identity provider. A failed fetch keeps the keys we had.
    """

    def __init__(self, url: str, refetch_interval: float) -> None:
        self.url, self.refetch_interval = url, refetch_interval
        # kid -> (key, the "alg" the JWK declares or None)
        self._keys: dict[str, tuple[VerificationKey, str | None]] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    def _fetch(self) -> dict[str, tuple[VerificationKey, str | None]]:
        # Blocking I/O: always called through asyncio.to_thread.
        with urllib.request.urlopen(self.url, timeout=5) as resp:
            data = json.load(resp)
        keys: dict[str, tuple[VerificationKey, str | None]] = {}
        for jwk in data["keys"]:
            try:
                parsed = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                continue  # a key type we cannot use (as PyJWKSet skips it)
            if parsed.key_id:
                keys[parsed.key_id] = (parsed.key, jwk.get("alg"))
        return keys

    async def key(self, kid: str, alg: str) -> VerificationKey:
        """The key for ``kid``; raise ``invalid_token`` if unknown or meant for another alg."""
        if kid not in self._keys:
            await self._refetch(kid)
        if kid not in self._keys:
            raise AuthError("invalid_token", "unknown signing key (kid)")
        key, declared = self._keys[kid]
        if declared is not None and declared != alg:
            raise AuthError("invalid_token", "algorithm does not match the signing key")
        return key

    async def _refetch(self, kid: str) -> None:
        async with self._lock:
            if (
                kid not in self._keys
                and time.monotonic() - self._fetched_at >= self.refetch_interval
            ):
                self._fetched_at = time.monotonic()
                try:
                    self._keys = await asyncio.to_thread(self._fetch)
                except Exception as err:  # network or format: refuse the token, keep serving
                    log.warning("JWKS fetch from %s failed: %s", self.url, type(err).__name__)


class TokenVerifier:
    """Verifies tokens against ``[auth]``; one per app, shared by every namespace."""

    def __init__(self, config: Config) -> None:
        self.auth = config.auth
        self.secret = hmac_secret(config)
        self.public_key = (
            _read_key_file(config, "auth.public_key_file", self.auth.public_key_file)
            if self.auth.public_key_file
            else None
        )
        self.jwks = (
            JwksCache(self.auth.jwks_url, self.auth.jwks_refetch_interval)
            if self.auth.jwks_url
            else None
        )

    async def _key_for(self, header: dict[str, Any], alg: str) -> VerificationKey:
        if alg.startswith(HMAC_PREFIX):
            if not self.secret:
                raise AuthError("invalid_token", "HMAC tokens are not accepted")
            return self.secret
        if self.jwks is not None and header.get("kid"):
            return await self.jwks.key(str(header["kid"]), alg)
        if self.public_key is not None:
            return self.public_key
        if self.jwks is not None:
            raise AuthError("invalid_token", "token has no kid")
        raise AuthError("invalid_token", "no key configured for this algorithm")

    async def verify(self, token: str) -> tuple[str, dict[str, Any]]:
        """Return (user_id, claims) or raise :class:`AuthError`.

        Never raises anything else: an exception escaping a Socket.IO connect
        handler leaves the client waiting for an answer that never comes.
        """
        try:
            return await self._verify(token)
        except AuthError:
            raise
        except Exception as err:
            # The type only: exception texts may quote token fragments.
            log.error("token verification failed unexpectedly: %s", type(err).__name__)
            raise AuthError("invalid_token", "token could not be verified") from None

    async def _verify(self, token: str) -> tuple[str, dict[str, Any]]:
        # The size check comes first so an oversized token costs no decoding.
        try:
            size = len(token.encode())
        except UnicodeEncodeError:
            raise AuthError("invalid_token", "malformed token") from None
        if size > MAX_TOKEN_BYTES:
            raise AuthError("invalid_token", f"token larger than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none" or alg not in self.auth.algorithms:
            raise AuthError("invalid_token", "signing algorithm not allowed")
        key = await self._key_for(header, alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.auth.issuer or None,
                audience=self.auth.audience or None,
                leeway=self.auth.leeway,
                options={
                    "require": list(self.auth.required_claims),
                    "verify_aud": bool(self.auth.audience),
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("invalid_token", "token is not yet valid (nbf/iat)") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid_token", "wrong issuer (iss)") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid_token", "wrong audience (aud)") from None
        except jwt.MissingRequiredClaimError as err:
            raise AuthError("invalid_token", f"missing claim {err.claim!r}") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid_token", "bad signature") from None
        except jwt.exceptions.InvalidSubjectError:
            # pyjwt checks that a present "sub" is a string, whatever user_claim is.
            raise AuthError("invalid_token", "claim 'sub' must be a string") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("invalid_token", "malformed token") from None
        _check_numeric_dates(claims)
        return self._user_id(claims), claims

    def _user_id(self, claims: dict[str, Any]) -> str:
        name = self.auth.user_claim
        user_id = claims.get(name)
        if not isinstance(user_id, str) or not user_id:
            raise AuthError("invalid_token", f"claim {name!r} must be a non-empty string")
        if len(user_id) > MAX_USER_ID_LEN:
            raise AuthError("invalid_token", f"claim {name!r} longer than {MAX_USER_ID_LEN}")
        try:
            user_id.encode("utf-8")  # JSON allows lone surrogates; storage keys do not
        except UnicodeEncodeError:
            raise AuthError("invalid_token", f"claim {name!r} is not valid Unicode") from None
        return user_id

    def expiry(self, claims: dict[str, Any]) -> float | None:
        """The token's ``exp`` as epoch seconds, or None when it has none."""
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, int | float) else None


#: Claims RFC 7519 defines as NumericDate. PyJWT accepts a numeric string such
#: as "1796012345" for them, but the expiry disconnect (which reads ``exp`` as a
#: number) would then never be scheduled: refuse anything but a JSON number.
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")


def _check_numeric_dates(claims: dict[str, Any]) -> None:
    for name in NUMERIC_DATE_CLAIMS:
        value = claims.get(name)
        if name in claims and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise AuthError("invalid_token", f"claim {name!r} must be a number")


def mint_token(
    config: Config,
    user_id: str,
    ttl: float = 3600,
    claims: dict[str, Any] | None = None,
    private_key: str | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    """A token the configured server accepts (for ``sanic-rt token`` and tests).

    With ``private_key`` (PEM) it signs with the first allowed algorithm of the
    key's type; otherwise with the first allowed HS* algorithm and the
    configured secret (or the dev key). ``headers`` adds JWT header fields
    such as ``kid``.
    """
    now = int(time.time())
    payload: dict[str, Any] = {config.auth.user_claim: user_id, "iat": now, "exp": now + int(ttl)}
    if config.auth.issuer:
        payload["iss"] = config.auth.issuer
    if config.auth.audience:
        payload["aud"] = config.auth.audience
    payload.update(claims or {})
    if private_key is not None:
        alg = _asymmetric_alg(config, private_key)
        return jwt.encode(payload, private_key, algorithm=alg, headers=headers)
    hmac_alg = next((a for a in config.auth.algorithms if a.startswith(HMAC_PREFIX)), None)
    secret = hmac_secret(config)
    if hmac_alg is None or not secret:
        raise ConfigError(config.source, "auth.secret", "no HMAC key: pass --private-key")
    return jwt.encode(payload, secret, algorithm=hmac_alg, headers=headers)


def _asymmetric_alg(config: Config, private_key: str) -> str:
    """The first allowed algorithm that the key's type can sign with."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_key.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError("--private-key", "", "not an unencrypted PEM private key") from None
    families: tuple[str, ...] = ()
    if isinstance(key, rsa.RSAPrivateKey):
        families = ("RS", "PS")
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        families = ("ES",)
    elif isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        families = ("EdDSA",)
    alg = next((a for a in config.auth.algorithms if families and a.startswith(families)), None)
    if alg is None:
        raise ConfigError(
            config.source, "auth.algorithms", "no allowed algorithm signs with this private key"
        )
    return alg
