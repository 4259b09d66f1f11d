"""JWT auth on /api/** and chat/run ownership, over real HTTP (SPEC §2 agent.auth.*, §9 "Auth")."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec

from app.api.app import create_app
from app.cli import main as cli_main
from app.config import load_settings
from app.devtools import FakeUpstream
from app.devtools.script import text_script, tool_call_script
from app.errors import ConfigError
from tests.security.support import (
    ISSUER,
    JwksServer,
    KeyPair,
    bearer,
    ec_pair,
    hmac_confused_token,
    mint,
    rsa_pair,
    unsigned_token,
)
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events

Start = Callable[..., GatewayServer]


def _local_auth(pair: KeyPair, issuer: str = ISSUER) -> dict[str, Any]:
    return {"agent": {"auth": {"enabled": True, "local-public-key": pair.public_pem, "issuer": issuer}}}


def _assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == 4010 and body["data"] is None and body["msg"]
    assert "Traceback" not in response.text


async def test_refused_tokens_get_the_401_envelope(
    deploy: Path, start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway(_local_auth(rsa_key))
    url = f"{gw.url}/api/ap/agents"
    other = rsa_pair("rsa-1")  # same kid, different key: a forged signature
    refused = {
        "no header": {},
        "garbled header": {"Authorization": "Bearer"},
        "wrong scheme": {"Authorization": f"Basic {mint(rsa_key)}"},
        "not a jwt": bearer("not.a.jwt"),
        "alg none": bearer(unsigned_token()),
        "hs256 with the public key": bearer(hmac_confused_token(rsa_key.public_pem)),
        "expired": bearer(mint(rsa_key, exp_in=-3600)),
        "not yet valid": bearer(mint(rsa_key, nbf_in=3600)),
        "wrong issuer": bearer(mint(rsa_key, issuer="https://evil.test")),
        "no issuer": bearer(mint(rsa_key, issuer=None)),
        "forged signature": bearer(mint(other)),
        "tampered payload": bearer(_tamper(mint(rsa_key))),
    }
    for name, headers in refused.items():
        response = await client.get(url, headers=headers)
        assert response.status_code == 401, name
        _assert_401(response)
    ok = await client.get(url, headers=bearer(mint(rsa_key)))
    assert ok.status_code == 200 and ok.json()["code"] == 0
    assert [a["key"] for a in ok.json()["data"]] == ["plain"]


def _tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "root"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


async def test_every_api_route_is_protected_but_health_and_docs_are_not(
    start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    gw = start_gateway(_local_auth(rsa_key))
    for method, path in [("GET", "/api/ap/agents"), ("GET", "/api/ap/agent?agentKey=x"), ("GET", "/api/ap/chats"),
                         ("GET", "/api/ap/chat?chatId=x"), ("POST", "/api/ap/query"), ("POST", "/api/ap/submit"),
                         ("GET", "/api/ap/viewport?viewportKey=x"), ("GET", "/api/ap/data?file=x"),
                         ("GET", "/api/ap/catalog/rejections"), ("GET", "/api/nope"), ("GET", "//api/ap/agents"),
                         ("GET", "/API/ap/agents")]:
        _assert_401(await client.request(method, gw.url + path))
    for path in ("/healthz", "/openapi.json", "/docs"):
        assert (await client.get(gw.url + path)).status_code == 200, path


async def test_jwks_from_a_real_server_cached(
    start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    ec_key = ec_pair("ec-1")
    with JwksServer(keys=[rsa_key.jwk(), ec_key.jwk()]) as jwks:
        gw = start_gateway({"agent": {"auth": {"enabled": True, "jwks-uri": jwks.url, "issuer": ISSUER,
                                               "jwks-cache-seconds": 300}}})
        url = f"{gw.url}/api/ap/chats"
        for pair in (rsa_key, ec_key, rsa_key):
            response = await client.get(url, headers=bearer(mint(pair, "carol")))
            assert response.status_code == 200, response.text
        assert jwks.hits == 1  # the key set is cached
        _assert_401(await client.get(url, headers=bearer(mint(rsa_pair("unknown-kid"), "carol"))))
        _assert_401(await client.get(url, headers=bearer(hmac_confused_token(rsa_key.public_pem))))
        _assert_401(await client.get(url, headers=bearer(unsigned_token())))
        _assert_401(await client.get(url, headers=bearer(mint(ec_key, exp_in=-3600))))


def test_fail_closed_without_a_key_source(deploy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(deploy, files=(Path("application.yml"),), env={},
                             overrides={"agent": {"auth": {"enabled": True}}})
    with pytest.raises(ConfigError, match="neither agent.auth.jwks-uri nor agent.auth.local-public-key"):
        create_app(settings)
    bad_pem = load_settings(deploy, files=(Path("application.yml"),), env={},
                            overrides={"agent": {"auth": {"enabled": True, "local-public-key": "not a key"}}})
    with pytest.raises(ConfigError, match="local-public-key"):
        create_app(bad_pem)
    # the real CLI refuses to start with a clear message (exit code 2, nothing served)
    (deploy / "application.yml").write_text(
        (deploy / "application.yml").read_text().replace("enabled: false", "enabled: true"), encoding="utf-8"
    )
    assert cli_main(["--dir", str(deploy), "serve", "--port", "1"]) == 2
    assert "neither agent.auth.jwks-uri nor agent.auth.local-public-key" in capsys.readouterr().err


async def test_users_see_and_touch_only_their_own_chats_and_runs(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, rsa_key: KeyPair
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    write_agent(deploy, "ask", agent("ONESHOT", tools={"backends": [], "frontends": ["confirm_dialog"], "actions": []}))
    gw = start_gateway(_local_auth(rsa_key))
    query = f"{gw.url}/api/ap/query"
    async with httpx.AsyncClient(timeout=30, headers=bearer(mint(rsa_key, "alice"))) as alice, \
            httpx.AsyncClient(timeout=30, headers=bearer(mint(rsa_key, "bob"))) as bob:
        upstream.enqueue(text_script(["hi ", "alice"]))
        events = await collect(alice, query, {"agentKey": "plain", "message": "hello"})
        chat_id = events[0]["chatId"]
        assert events[-1]["type"] == "run.complete"

        assert [c["chatId"] for c in (await alice.get(f"{gw.url}/api/ap/chats")).json()["data"]] == [chat_id]
        assert (await bob.get(f"{gw.url}/api/ap/chats")).json()["data"] == []
        assert (await alice.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})).status_code == 200
        for response in (
            await bob.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id}),
            await bob.post(query, json={"chatId": chat_id, "message": "mine now"}),
        ):
            assert response.status_code == 403 and response.json()["code"] == 4030, response.text

        # a frontend tool of alice's run waits; bob cannot answer it, alice can
        upstream.enqueue(tool_call_script("call_1", "confirm_dialog", ['{"question": "ok?"}']),
                         text_script(["done"]))
        stream = stream_events(alice, query, {"agentKey": "ask", "message": "confirm please"})
        seen: list[dict[str, Any]] = []
        async for event in stream:
            seen.append(event)
            if event["type"] == "tool.start":
                submit = {"runId": event["runId"], "toolId": event["toolId"], "params": {"ok": True}}
                denied = await bob.post(f"{gw.url}/api/ap/submit", json=submit)
                assert denied.status_code == 403 and denied.json()["code"] == 4030
                accepted = await alice.post(f"{gw.url}/api/ap/submit", json=submit)
                assert accepted.json()["data"]["status"] == "accepted"
        assert seen[-1]["type"] == "run.complete"
        result = next(e for e in seen if e["type"] == "tool.result")
        assert result["result"] == {"ok": True}
        assert len((await alice.get(f"{gw.url}/api/ap/chats")).json()["data"]) == 2
        assert (await bob.get(f"{gw.url}/api/ap/chats")).json()["data"] == []


async def test_unreachable_jwks_is_a_401_not_a_crash(
    start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    with JwksServer(keys=[]) as gone:
        url = gone.url  # a real port that is closed once the server stops
    gw = start_gateway({"agent": {"auth": {"enabled": True, "jwks-uri": url}}})
    response = await client.get(f"{gw.url}/api/ap/chats", headers=bearer(mint(rsa_key)))
    _assert_401(response)
    assert "key set is unavailable" in response.json()["msg"]


async def test_attack_token_whose_alg_does_not_fit_its_key_is_a_401_not_a_500(
    start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    """pyjwt answers an ``alg`` of another key family (ES256 naming an RSA key of the JWKS) with a
    ``TypeError``, and an ECDSA curve mismatch (ES384 against a P-256 key) with ``InvalidKeyError``:
    anyone could turn every request into a 500 and a logged traceback. Both are bad tokens (401)."""
    now = int(time.time())
    claims = {"sub": "mallory", "iss": ISSUER, "iat": now, "exp": now + 600}
    p384 = ec.generate_private_key(ec.SECP384R1())
    with JwksServer(keys=[rsa_key.jwk()]) as jwks:
        gw = start_gateway({"agent": {"auth": {"enabled": True, "jwks-uri": jwks.url, "issuer": ISSUER}}})
        names_the_rsa_key = jwt.encode(claims, ec_pair("x").private, algorithm="ES256", headers={"kid": rsa_key.kid})
        _assert_401(await client.get(f"{gw.url}/api/ap/chats", headers=bearer(names_the_rsa_key)))
        assert (await client.get(f"{gw.url}/api/ap/chats", headers=bearer(mint(rsa_key)))).status_code == 200
    p256 = ec_pair("ec-1")
    local = start_gateway(_local_auth(p256))
    other_curve = jwt.encode(claims, p384, algorithm="ES384", headers={"kid": p256.kid})
    _assert_401(await client.get(f"{local.url}/api/ap/chats", headers=bearer(other_curve)))
    assert (await client.get(f"{local.url}/api/ap/chats", headers=bearer(mint(p256)))).status_code == 200


class _PrefixedGateway(GatewayServer):
    """The gateway served under a path prefix, as ``uvicorn --root-path /gw`` behind a proxy that strips it."""

    def __init__(self, deploy_dir: Path, overrides: dict[str, Any], root_path: str) -> None:
        super().__init__(deploy_dir, overrides=overrides)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", root_path=root_path,
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)


async def test_attack_api_of_a_gateway_served_under_a_root_path_without_a_token(
    deploy: Path, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    """Under a root path the ASGI ``path`` is ``/gw/api/ap/…``: judged as it was, it is not under
    ``/api``, so every route answered unauthenticated, as the anonymous user (runs included)."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    with _PrefixedGateway(deploy, _local_auth(rsa_key), "/gw") as gw:
        for path in ("/api/ap/agents", "/api/ap/chats", "/api/ap/usage", "/v1/models"):
            response = await client.get(gw.url + path)
            assert response.status_code == 401, (path, response.text)
        _assert_401(await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "hi"}))
        allowed = await client.get(f"{gw.url}/api/ap/agents", headers=bearer(mint(rsa_key)))
        assert allowed.status_code == 200 and [a["key"] for a in allowed.json()["data"]] == ["plain"]
        assert (await client.get(f"{gw.url}/healthz")).status_code == 200


def test_security_package_exports_are_sorted() -> None:
    import app.security

    assert app.security.__all__ == sorted(app.security.__all__)
    assert all(hasattr(app.security, name) for name in app.security.__all__)
