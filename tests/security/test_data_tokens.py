"""Signed data links for GET /api/ap/data (SPEC §2 agent.chat-image-token.*, §9 "Data links")."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.config import ImageTokenSettings, load_settings
from app.errors import AuthError, ForbiddenError
from app.security.data_tokens import issue_data_token, sign_data_token, signed_data_url, verify_data_token
from tests.security.support import ISSUER, KeyPair, bearer, mint
from tests.support.server import GatewayServer

TOKENS = ImageTokenSettings(secret="s3cret-now", **{"previous-secrets": ["s3cret-old"], "ttl-seconds": 60})


def test_sign_and_verify() -> None:
    now = 1_700_000_000.0
    token = issue_data_token(TOKENS, "shots/a.png", now)
    assert token is not None
    verify_data_token(TOKENS, "shots/a.png", token, now)
    verify_data_token(TOKENS, "shots/a.png", token, now + 60)  # valid through its expiry second
    with pytest.raises(ForbiddenError, match="expired"):
        verify_data_token(TOKENS, "shots/a.png", token, now + 61)
    with pytest.raises(ForbiddenError):
        verify_data_token(TOKENS, "shots/b.png", token, now)  # another file
    expiry, _, signature = token.partition(".")
    with pytest.raises(ForbiddenError):
        verify_data_token(TOKENS, "shots/a.png", f"{int(expiry) + 1000}.{signature}", now)  # stretched expiry
    for garbage in ("x", "1.", ".abc", "abc.def", "9" * 200, "1\x00.a"):
        with pytest.raises(ForbiddenError):
            verify_data_token(TOKENS, "shots/a.png", garbage, now)
    with pytest.raises(AuthError):
        verify_data_token(TOKENS, "shots/a.png", None, now)


@pytest.mark.parametrize("token", ["1.\u00e9", "\u00b2.abc", "9999999999.\u0661\u0662"],
                         ids=["non_ascii_signature", "superscript_expiry", "arabic_digits"])
def test_attack_a_non_ascii_token_is_refused_not_a_crash(token: str) -> None:
    """``compare_digest`` raises ``TypeError`` on non-ASCII text and ``int()`` refuses the digits
    ``str.isdigit`` takes: both were a 500 with a traceback, reachable without credentials."""
    tokens = ImageTokenSettings(secret="s3cret")
    with pytest.raises(ForbiddenError, match="invalid data token"):
        verify_data_token(tokens, "img.png", token)


def test_rotation_accepts_previous_secrets_only() -> None:
    expiry = int(time.time()) + 60
    verify_data_token(TOKENS, "a.png", sign_data_token("s3cret-old", "a.png", expiry))
    with pytest.raises(ForbiddenError):
        verify_data_token(TOKENS, "a.png", sign_data_token("never-configured", "a.png", expiry))


def test_tokens_off_means_plain_links() -> None:
    off = ImageTokenSettings()
    assert issue_data_token(off, "a.png") is None
    verify_data_token(off, "a.png", None)
    settings = load_settings(Path("."), files=(), env={})
    assert signed_data_url(settings, "dir/a b.png") == "/api/ap/data?file=dir%2Fa+b.png"


def _with_tokens(extra: dict[str, object] | None = None) -> dict[str, object]:
    tokens = {"secret": "s3cret-now", "previous-secrets": "s3cret-old", "ttl-seconds": 60}
    return {"agent": {"chat-image-token": tokens, **(extra or {})}}


async def test_data_route_requires_a_valid_token(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    (deploy / "data" / "shots").mkdir()
    (deploy / "data" / "shots" / "a.png").write_bytes(b"\x89PNG fake")
    gw = start_gateway(_with_tokens())
    link = signed_data_url(gw.settings, "shots/a.png")
    assert parse_qs(urlsplit(link).query)["file"] == ["shots/a.png"]
    good = await client.get(gw.url + link)
    assert good.status_code == 200 and good.content == b"\x89PNG fake"
    old = sign_data_token("s3cret-old", "shots/a.png", int(time.time()) + 30)
    assert (await client.get(f"{gw.url}/api/ap/data", params={"file": "shots/a.png", "token": old})).status_code == 200
    cases = {
        None: (401, 4010),
        "garbage": (403, 4030),
        sign_data_token("s3cret-now", "shots/a.png", int(time.time()) - 5): (403, 4030),  # expired
        sign_data_token("s3cret-now", "shots/other.png", int(time.time()) + 30): (403, 4030),
        sign_data_token("wrong", "shots/a.png", int(time.time()) + 30): (403, 4030),
    }
    for token, (status, code) in cases.items():
        params = {"file": "shots/a.png"} | ({"token": token} if token is not None else {})
        response = await client.get(f"{gw.url}/api/ap/data", params=params)
        assert (response.status_code, response.json()["code"]) == (status, code), token


async def test_signed_link_works_without_a_bearer_header_when_auth_is_on(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    """An ``<img src>`` cannot send a JWT: the signed link is its credential; nothing else is opened."""
    (deploy / "data" / "a.png").write_bytes(b"img")
    auth = {"auth": {"enabled": True, "local-public-key": rsa_key.public_pem, "issuer": ISSUER}}
    gw = start_gateway(_with_tokens(auth))
    assert (await client.get(gw.url + signed_data_url(gw.settings, "a.png"))).content == b"img"
    forged = await client.get(f"{gw.url}/api/ap/data", params={"file": "a.png", "token": "1.x"})
    assert forged.status_code == 403
    no_token = await client.get(f"{gw.url}/api/ap/data", params={"file": "a.png"})
    assert no_token.status_code == 401  # neither a JWT nor a link token
    assert (await client.get(f"{gw.url}/api/ap/agents", params={"token": "1.x"})).status_code == 401
    with_jwt = await client.get(f"{gw.url}/api/ap/data", params={"file": "a.png"}, headers=bearer(mint(rsa_key)))
    assert with_jwt.status_code == 401  # a JWT does not replace the data token when tokens are on
