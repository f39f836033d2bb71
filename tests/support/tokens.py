"""Key pairs and hand-built tokens for the auth tests (never mocks: real JWTs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def rsa_keypair() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def write_keypair(directory: Path, name: str = "rsa") -> tuple[Path, Path]:
    private, public = rsa_keypair()
    priv_path, pub_path = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    priv_path.write_text(private)
    pub_path.write_text(public)
    return priv_path, pub_path


def public_jwk(private_pem: str, kid: str, alg: str = "RS256") -> dict[str, Any]:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def claims(user_id: str | None = "alice", ttl: float = 600, **extra: Any) -> dict[str, Any]:
    """A payload with iat/exp; ``extra`` values of None drop that claim."""
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + int(ttl)}
    if user_id is not None:
        payload["sub"] = user_id
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A JWT built by hand, for what pyjwt refuses to make (alg none, a PEM as HMAC key)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if hmac_key is None:
        return signing_input + "."
    sig = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def token_material(token: str) -> list[str]:
    """Pieces of a token that must never show up in a log."""
    pieces = [token[:12]] + [p for p in token.split(".") if len(p) >= 8]
    return [p[-24:] if len(p) > 24 else p for p in pieces] + [p[:24] for p in pieces]
