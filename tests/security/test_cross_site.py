"""With auth off, other web sites cannot change anything on the gateway (``CrossSiteGuard``,
SPEC §9): a browser sends "simple" cross-site POSTs (``text/plain``, ``multipart/form-data``)
without a CORS preflight, so CORS alone never stopped them. Over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.security.support import ISSUER, KeyPair, mint
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer

EVIL = "https://evil.example"


async def test_attack_a_web_page_cannot_run_an_agent_on_a_local_gateway_without_auth(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """What ``fetch(url, {method: "POST", mode: "no-cors", body})`` from any page sends: the agent
    ran (tools and all) on the user's own gateway, the page just could not read the answer."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    body = '{"agentKey":"plain","message":"delete everything"}'
    for content_type in ("text/plain;charset=UTF-8", "application/json"):
        refused = await client.post(f"{gw.url}/api/ap/query", content=body,
                                    headers={"Origin": EVIL, "Content-Type": content_type})
        assert refused.status_code == 403 and "cross-site" in refused.json()["msg"]
    upload = await client.post(f"{gw.url}/api/ap/upload", headers={"Origin": EVIL},
                               files={"file": ("a.txt", b"hello", "text/plain")})
    assert upload.status_code == 403
    interrupt = await client.post(f"{gw.url}/api/ap/interrupt", headers={"Origin": "null"}, json={"runId": "run_x"})
    assert interrupt.status_code == 403  # a sandboxed frame or a file:// page
    assert upstream.requests == []
    assert (await client.get(f"{gw.url}/api/ap/agents", headers={"Origin": EVIL})).status_code == 200  # reads pass


async def test_the_gateways_own_pages_and_clients_without_origin_still_work(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["from the console"]), text_script(["from curl"]))
    query = {"agentKey": "plain", "message": "x", "stream": False}
    own = await client.post(f"{gw.url}/api/ap/query", json=query, headers={"Origin": gw.url})
    assert own.status_code == 200 and own.json()["data"]["answer"] == "from the console"
    bare = await client.post(f"{gw.url}/api/ap/query", json=query)
    assert bare.status_code == 200 and bare.json()["data"]["answer"] == "from curl"


@pytest.mark.parametrize("origin", ["http://localhost:8081", "https://app.example.com"])
async def test_origins_that_cors_allows_are_let_in(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    origin: str,
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway({"agent": {"cors": {"enabled": True, "allowed-origin-patterns": [
        "http://localhost:8081", "https://*.example.com"]}}})
    upstream.enqueue(text_script(["ok"]))
    reply = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False},
                              headers={"Origin": origin})
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == origin
    refused = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x"},
                                headers={"Origin": EVIL})
    assert refused.status_code == 403


async def test_attack_dns_rebinding_host_header_is_refused_when_auth_is_off(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A page at ``http://attacker.example:PORT`` whose name is re-pointed at 127.0.0.1 is
    same-origin with the local gateway: the browser sends ``Host`` and ``Origin`` both naming
    ``attacker.example:PORT``. It ran agents and read every chat, ``GET`` and streams included."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway({"server": {"allowed-hosts": ["gw.example.com", "*.corp.example"]}})
    evil = f"attacker.example:{gw.port}"
    rebound = {"Host": evil, "Origin": f"http://{evil}"}
    query = '{"agentKey":"plain","message":"pwn"}'
    refused = await client.post(f"{gw.url}/api/ap/query", content=query,
                                headers={**rebound, "Content-Type": "text/plain"})
    assert refused.status_code == 403 and "attacker.example" in refused.json()["msg"], refused.text
    assert refused.json()["code"] == 4030 and refused.json()["data"] is None
    for path in ("/api/ap/chats", "/api/ap/agents", "/api/ap/run/stream?runId=run_x", "/v1/models", "/"):
        response = await client.get(f"{gw.url}{path}", headers={"Host": evil})
        assert response.status_code == 403, (path, response.text)
    assert (await client.get(f"{gw.url}/api/ap/chats", headers={"Host": "Localtest.ME."})).status_code == 403
    assert upstream.requests == []
    # a load balancer's health probe names any host; the answer holds nothing a page could use
    assert (await client.get(f"{gw.url}/healthz", headers={"Host": "probe.internal"})).status_code == 200
    assert (await client.post(f"{gw.url}/healthz", headers={"Host": evil})).status_code == 403
    # loopback names, any IP literal (the LAN address of a gateway bound to 0.0.0.0) and the
    # configured names are answered, with or without a port
    for host in (f"127.0.0.1:{gw.port}", f"localhost:{gw.port}", "LOCALHOST", "[::1]:8080", "127.1.2.3",
                 "192.168.1.20:8080", "gw.example.com", "a.corp.example:443"):
        response = await client.get(f"{gw.url}/api/ap/chats", headers={"Host": host})
        assert response.status_code == 200, (host, response.text)
    upstream.enqueue(text_script(["from the console on its LAN address"]))
    own = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False},
                            headers={"Host": "192.168.1.20:8080", "Origin": "http://192.168.1.20:8080"})
    assert own.status_code == 200 and own.json()["data"]["answer"] == "from the console on its LAN address"


async def test_with_auth_on_any_host_is_answered(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    """The bearer token protects a gateway with auth on; a browser never sends one by itself."""
    gw = start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": rsa_key.public_pem,
                                           "issuer": ISSUER}}})
    response = await client.get(f"{gw.url}/api/ap/chats", headers={"Host": "gw.public.example",
                                                                   "Authorization": f"Bearer {mint(rsa_key)}"})
    assert response.status_code == 200, response.text
