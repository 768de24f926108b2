"""API keys: test keys shaped like Coinbase's, key files, and JWT verification."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..coinbase import parse_private_key
from ..errors import ConfigError

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
ALGORITHMS: Mapping[str, type] = {
    "ES256": ec.EllipticCurvePublicKey,
    "EdDSA": ed25519.Ed25519PublicKey,
}


@dataclass(frozen=True, kw_only=True)
class TestKey:
    """A Coinbase-shaped API key for tests and demos (register ``public_key`` with the emulator)."""

    __test__ = False  # not a pytest test class

    name: str
    """``organizations/{uuid}/apiKeys/{uuid}``."""
    secret: str
    """The private key exactly as Coinbase issues it (EC: SEC1 PEM; Ed25519: base64 seed+public)."""
    public_key: PublicKey


def make_test_key(kind: Literal["ec", "ed25519"], name: str | None = None) -> TestKey:
    """A fresh key pair of ``kind``; the secret has Coinbase's text format."""
    name = name or f"organizations/{uuid.uuid4()}/apiKeys/{uuid.uuid4()}"
    if kind == "ec":
        ec_key = ec.generate_private_key(ec.SECP256R1())
        pem = ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return TestKey(name=name, secret=pem.decode(), public_key=ec_key.public_key())
    if kind == "ed25519":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        public = ed_key.public_key()
        raw = ed_key.private_bytes_raw() + public.public_bytes_raw()
        return TestKey(name=name, secret=base64.b64encode(raw).decode(), public_key=public)
    raise ConfigError(f"unknown key kind {kind!r} (valid: ec ed25519)")


def public_key_from_secret(secret: str) -> PublicKey:
    """Derive the public key from a Coinbase private key string (PEM or base64 Ed25519)."""
    return parse_private_key(secret).public_key()


def write_key_file(path: str | Path, key: TestKey) -> Path:
    """Write ``key`` as Coinbase's downloaded ``cdp_api_key.json`` (owner-only permissions)."""
    path = Path(path)
    path.write_text(json.dumps({"name": key.name, "privateKey": key.secret}, indent=2))
    os.chmod(path, 0o600)
    return path


def load_public_keys(path: str | Path) -> dict[str, PublicKey]:
    """Read a ``{"name", "privateKey"}`` key file (or a list of them) → key name → public key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.__class__.__name__}") from exc
    entries = data if isinstance(data, list) else [data]
    try:
        return {e["name"]: public_key_from_secret(e["privateKey"]) for e in entries}
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"key file {path} needs 'name' and 'privateKey'") from exc


def check_keys(keys: Mapping[str, Any]) -> dict[str, PublicKey]:
    """Validate the configured keys: each must be an EC P-256 or Ed25519 public key."""
    for name, key in keys.items():
        ok_ec = isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        if not (ok_ec or isinstance(key, ed25519.Ed25519PublicKey)):
            raise ConfigError(f"key {name!r} is not an EC P-256 or Ed25519 public key")
    return dict(keys)


class TokenRejected(Exception):
    """A JWT failed verification; the message is a short reason, never the token."""


def verify_token(
    header: str | None,
    keys: Mapping[str, PublicKey],
    uri: str,
    now: float,
    *,
    leeway_s: float,
    max_lifetime_s: float,
) -> str:
    """Check an ``Authorization: Bearer`` header as Coinbase does; return the key name."""
    if not header or not header.startswith("Bearer "):
        raise TokenRejected("missing bearer token")
    token = header.removeprefix("Bearer ").strip()
    try:
        head = jwt.get_unverified_header(token)
        alg, kid = str(head.get("alg")), str(head.get("kid"))
        if kid not in keys:
            raise TokenRejected("unknown key")
        if alg not in ALGORITHMS or not isinstance(keys[kid], ALGORITHMS[alg]):
            raise TokenRejected("algorithm does not match the key")
        claims = jwt.decode(
            token,
            keys[kid],
            algorithms=[alg],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"invalid token ({exc.__class__.__name__})") from None
    check_claims(claims, kid, uri, now, leeway_s=leeway_s, max_lifetime_s=max_lifetime_s)
    return kid


def check_claims(
    claims: Mapping[str, Any],
    kid: str,
    uri: str,
    now: float,
    *,
    leeway_s: float,
    max_lifetime_s: float,
) -> None:
    """The claim checks: sub, iss, nbf/exp window, lifetime and the signed ``uri``."""
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if claims.get("sub") != kid:
        raise TokenRejected("sub does not name the key")
    if claims.get("iss") != "cdp":
        raise TokenRejected("iss must be cdp")
    if not isinstance(nbf, int | float) or not isinstance(exp, int | float):
        raise TokenRejected("nbf and exp are required")
    if nbf > now + leeway_s:
        raise TokenRejected("token not yet valid")
    if exp <= now:
        raise TokenRejected("token expired")
    if exp - nbf > max_lifetime_s:
        raise TokenRejected("token lifetime too long")
    if claims.get("uri") != uri:
        raise TokenRejected("uri does not match the request")
