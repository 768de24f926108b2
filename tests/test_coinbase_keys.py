"""Credentials and JWTs, checked with PyJWT and cryptography independently."""

from __future__ import annotations

import base64
import itertools
import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from livermore_nb.coinbase import (
    Credentials,
    build_jwt,
    load_credentials,
    page_windows,
    parse_private_key,
)
from livermore_nb.errors import ConfigError
from livermore_nb.timeframes import TIMEFRAMES

NAME = "organizations/0000-org/apiKeys/1111-key"


def ec_pem() -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return pem, key


def ed25519_b64() -> tuple[str, ed25519.Ed25519PrivateKey]:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + pub).decode(), key


def test_es256_jwt_has_the_claims_coinbase_checks() -> None:
    pem, key = ec_pem()
    creds = Credentials(NAME, parse_private_key(pem.replace("\n", "\\n")))  # env-var style
    now = time.time()
    token = build_jwt(
        creds, "GET", "127.0.0.1:8765", "/api/v3/brokerage/products/BTC-USD/candles", now
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == NAME and len(header["nonce"]) >= 16
    claims = jwt.decode(
        token, key.public_key(), algorithms=["ES256"], options={"verify_aud": False}
    )
    assert claims["sub"] == NAME and claims["iss"] == "cdp"
    assert claims["exp"] - claims["nbf"] == 120 and abs(claims["nbf"] - now) <= 1
    assert claims["uri"] == "GET 127.0.0.1:8765/api/v3/brokerage/products/BTC-USD/candles"
    again = build_jwt(creds, "GET", "h", "/p", now)
    assert jwt.get_unverified_header(again)["nonce"] != header["nonce"]


def test_eddsa_jwt_verifies_with_the_ed25519_public_key() -> None:
    secret, key = ed25519_b64()
    creds = Credentials(NAME, parse_private_key(secret))
    assert creds.algorithm == "EdDSA"
    token = build_jwt(creds, "GET", "api.coinbase.com", "/x", time.time())
    claims = jwt.decode(token, key.public_key(), algorithms=["EdDSA"])
    assert claims["uri"] == "GET api.coinbase.com/x"


@pytest.mark.parametrize(
    "secret",
    [
        "-----BEGIN EC PRIVATE KEY-----\nnot a key\n-----END EC PRIVATE KEY-----",
        "definitely not base64!",
        base64.b64encode(b"short").decode(),
    ],
)
def test_unreadable_keys_are_config_errors_that_do_not_echo_the_key(secret: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_private_key(secret)
    assert secret not in str(err.value)


def test_wrong_curve_is_rejected() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ConfigError, match="P-256"):
        parse_private_key(pem)


def test_credentials_repr_hides_the_key() -> None:
    pem, _ = ec_pem()
    creds = Credentials(NAME, parse_private_key(pem))
    assert "PRIVATE" not in repr(creds) and "private_key" not in repr(creds)


def test_load_credentials_from_env_and_key_file(tmp_path: Path, caplog) -> None:
    assert load_credentials({}) is None
    pem, _ = ec_pem()
    assert load_credentials({"COINBASE_API_KEY_NAME": NAME, "COINBASE_API_PRIVATE_KEY": pem})
    key_file = tmp_path / "cdp_api_key.json"
    key_file.write_text(
        f'{{"name": "{NAME}", "privateKey": {pem!r}}}'.replace("'", '"').replace("\n", "\\n")
    )
    os.chmod(key_file, 0o600)
    creds = load_credentials({"COINBASE_API_PRIVATE_KEY_FILE": str(key_file)})
    assert creds is not None and creds.key_name == NAME and not caplog.records
    os.chmod(key_file, 0o644)
    load_credentials({"COINBASE_API_PRIVATE_KEY_FILE": str(key_file)})
    assert any("readable by others" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError):
        load_credentials({"COINBASE_API_KEY_NAME": NAME})
    with pytest.raises(ConfigError):
        load_credentials({"COINBASE_API_PRIVATE_KEY_FILE": str(tmp_path / "missing")})


def test_page_windows_cover_the_range_newest_first_within_the_limit() -> None:
    tf = TIMEFRAMES["1h"]
    end = 1_700_000_000 // 3600 * 3600
    pages = page_windows(tf, end - 1203 * 3600, end, 300)
    assert [((p.end_s - p.start_s) // 3600) for p in pages] == [300, 300, 300, 300, 3]
    assert pages[0].end_s == end and pages[-1].start_s == end - 1203 * 3600
    assert all(a.start_s == b.end_s for a, b in itertools.pairwise(pages))
