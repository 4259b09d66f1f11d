"""Catalog HTTP routes over a real uvicorn server on a loopback port (SPEC §3.5, §4, §9)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api.catalog_routes import router
from app.api.envelope import gateway_error_handler, http_error_handler, validation_error_handler
from app.catalog.manager import CatalogManager
from app.config import Settings
from app.errors import GatewayError

from .support import BUILTIN_TOOLS, Deployment

AGENT = {
    "key": "helper",
    "name": "Helper",
    "icon": "emoji:🤖",
    "description": "helps",
    "mode": "PLAN_EXECUTE",
    "modelConfig": {"modelKey": "m1", "reasoning": {"enabled": True, "effort": "LOW"}},
    "toolConfig": {"backends": ["_bash_"], "frontends": ["confirm_dialog"], "actions": ["switch_theme"]},
    "skills": ["math"],
    "toolChoice": "REQUIRED",
    "budget": {"runTimeoutMs": 5000},
    "planExecute": {
        "plan": {"systemPrompt": "plan", "deepThinking": True, "toolConfig": None},
        "execute": {"systemPrompt": "do"},
        "maxSteps": 3,
    },
}


@dataclass
class FakeGateway:
    settings: Settings
    catalog: CatalogManager


@dataclass
class Served:
    url: str
    deploy: Deployment
    manager: CatalogManager


def build_app(gateway: FakeGateway) -> FastAPI:
    app = FastAPI()
    app.state.gateway = gateway
    app.include_router(router)
    app.add_exception_handler(GatewayError, gateway_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    return app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    deploy = Deployment(tmp_path_factory.mktemp("routes")).standard()
    deploy.write("agents/helper.json", AGENT)
    deploy.write("agents/broken.json", "{ nope")
    deploy.write("viewports/show_card.html", "<div>card</div>")
    deploy.write("viewports/form.qlc", '{"fields": ["a"]}')
    deploy.write("data/report.txt", "hello data")
    deploy.write("data/sub/pic.png", b"\x89PNG")
    deploy.write("secret.txt", "top secret")
    os.symlink(deploy.base / "secret.txt", deploy.base / "data" / "escape.txt")
    os.symlink(deploy.base / "secret.txt", deploy.base / "viewports" / "evil.html")
    settings = deploy.settings()
    manager = CatalogManager(settings, BUILTIN_TOOLS, builtin_models_dir=deploy.base / "none")
    manager.reload()
    config = uvicorn.Config(build_app(FakeGateway(settings, manager)), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", deploy, manager)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=10) as http:
        yield http


def assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] > 0 and body["msg"] and body["data"] is None
    assert "Traceback" not in response.text
    return body


# --------------------------------------------------------------------------- agents


def test_list_agents(client: httpx.Client) -> None:
    body = client.get("/api/ap/agents").json()
    assert body["code"] == 0 and body["msg"] == "success"
    (agent,) = body["data"]
    assert agent == {
        "key": "helper",
        "name": "Helper",
        "icon": "emoji:🤖",
        "description": "helps",
        "mode": "PLAN_EXECUTE",
        "modelKey": "m1",
        "tools": ["_plan_add_tasks_", "_bash_", "confirm_dialog", "switch_theme", "_plan_update_task_"],
    }


def test_agent_detail(client: httpx.Client) -> None:
    response = client.get("/api/ap/agent", params={"agentKey": "helper"})
    data = response.json()["data"]
    assert data["key"] == "helper" and data["toolChoice"] == "REQUIRED" and data["maxSteps"] == 3
    assert data["budget"]["runTimeoutMs"] == 5000 and data["budget"]["model"]["maxCalls"] == 30
    plan, execute = data["stages"]
    assert plan["name"] == "plan" and plan["deepThinking"] is True
    assert plan["model"] == {"key": "m1", "modelId": "m1-id", "protocol": "OPENAI", "provider": "bailian"}
    assert plan["reasoning"] == {"enabled": True, "effort": "LOW"}
    assert [t["name"] for t in plan["tools"]] == ["_plan_add_tasks_"]
    assert [(t["name"], t["kind"]) for t in execute["tools"]] == [
        ("_bash_", "backend"),
        ("confirm_dialog", "frontend"),
        ("switch_theme", "action"),
        ("_plan_update_task_", "backend"),
    ]
    assert execute["tools"][1]["toolType"] == "html" and execute["tools"][1]["toolKey"] == "confirm_dialog"
    assert data["skills"] == [{"id": "math", "name": "Math", "description": "does math"}]


def test_agent_detail_has_no_secrets(client: httpx.Client) -> None:
    text = client.get("/api/ap/agent", params={"agentKey": "helper"}).text
    assert "sk-bailian-secret" not in text and "bailian.invalid" not in text


def test_unknown_agent_is_404(client: httpx.Client) -> None:
    assert "ghost" in assert_error(client.get("/api/ap/agent", params={"agentKey": "ghost"}), 404)["msg"]


def test_missing_agent_key_is_400(client: httpx.Client) -> None:
    assert "agentKey" in assert_error(client.get("/api/ap/agent"), 400)["msg"]


@pytest.mark.parametrize("key", ["../helper", "/etc/passwd", "a/b", "a\x00b", ".hidden"])
def test_invalid_agent_key_is_400(client: httpx.Client, key: str) -> None:
    assert_error(client.get("/api/ap/agent", params={"agentKey": key}), 400)


# --------------------------------------------------------------------------- viewports


def test_html_viewport(client: httpx.Client) -> None:
    body = client.get("/api/ap/viewport", params={"viewportKey": "show_card", "chatId": "c1", "runId": "r1"}).json()
    assert body == {"code": 0, "msg": "success", "data": {"html": "<div>card</div>"}}


def test_json_viewport(client: httpx.Client) -> None:
    assert client.get("/api/ap/viewport", params={"viewportKey": "form"}).json()["data"] == {"fields": ["a"]}


def test_unknown_viewport_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/api/ap/viewport", params={"viewportKey": "nope"}), 404)


def test_missing_viewport_key_is_400(client: httpx.Client) -> None:
    assert_error(client.get("/api/ap/viewport"), 400)


@pytest.mark.parametrize(
    "query",
    ["viewportKey=../secret", "viewportKey=%2e%2e%2fsecret", "viewportKey=%2Fetc%2Fpasswd", "viewportKey=a%00b",
     "viewportKey=..", "viewportKey=sub%5cx"],
)
def test_viewport_traversal_is_refused(client: httpx.Client, query: str) -> None:
    assert_error(client.get(f"/api/ap/viewport?{query}"), 400)


def test_viewport_symlink_out_of_the_folder_is_not_served(client: httpx.Client) -> None:
    response = client.get("/api/ap/viewport", params={"viewportKey": "evil"})
    assert_error(response, 404)
    assert "top secret" not in response.text


# --------------------------------------------------------------------------- data


def test_data_inline(client: httpx.Client) -> None:
    response = client.get("/api/ap/data", params={"file": "report.txt"})
    assert response.status_code == 200 and response.text == "hello data"
    assert response.headers["content-disposition"].startswith("inline")
    assert response.headers["content-type"].startswith("text/plain")


def test_data_download_is_an_attachment(client: httpx.Client) -> None:
    response = client.get("/api/ap/data", params={"file": "sub/pic.png", "download": "true"})
    assert response.status_code == 200 and response.content == b"\x89PNG"
    assert response.headers["content-disposition"].startswith("attachment") and "pic.png" in response.headers[
        "content-disposition"
    ]


def test_data_token_is_accepted_for_now(client: httpx.Client) -> None:
    assert client.get("/api/ap/data", params={"file": "report.txt", "token": "anything"}).status_code == 200


def test_missing_data_file_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/api/ap/data", params={"file": "nope.txt"}), 404)


def test_data_folder_itself_is_404(client: httpx.Client) -> None:
    assert_error(client.get("/api/ap/data", params={"file": "sub"}), 404)


def test_missing_file_parameter_is_400(client: httpx.Client) -> None:
    assert_error(client.get("/api/ap/data"), 400)


def test_invalid_download_flag_is_400(client: httpx.Client) -> None:
    assert_error(client.get("/api/ap/data", params={"file": "report.txt", "download": "maybe"}), 400)


@pytest.mark.parametrize(
    "query",
    [
        "file=../secret.txt",
        "file=sub/../../secret.txt",
        "file=%2e%2e%2fsecret.txt",
        "file=%252e%252e%252fsecret.txt",
        "file=..%2fsecret.txt",
        "file=%2Fetc%2Fpasswd",
        "file=/etc/passwd",
        f"file={'%2F'}{'tmp'}",
        "file=report.txt%00.png",
        "file=..%5csecret.txt",
        "file=~%2Fsecret.txt",
    ],
)
def test_data_traversal_is_refused(client: httpx.Client, query: str) -> None:
    response = client.get(f"/api/ap/data?{query}")
    assert_error(response, 400)
    assert "top secret" not in response.text


def test_data_symlink_out_of_the_folder_is_refused(client: httpx.Client) -> None:
    response = client.get("/api/ap/data", params={"file": "escape.txt"})
    assert_error(response, 400)
    assert "top secret" not in response.text


# --------------------------------------------------------------------------- rejections, health


def test_rejections(client: httpx.Client) -> None:
    data = client.get("/api/ap/catalog/rejections").json()["data"]
    files = {item["file"]: item for item in data}
    assert files["agents/broken.json"]["kind"] == "agent" and files["agents/broken.json"]["reason"].startswith("line 1")
    assert files["viewports/evil.html"]["kind"] == "viewport"


def test_healthz(client: httpx.Client, served: Served) -> None:
    body = client.get("/healthz").json()
    assert body == {
        "code": 0,
        "msg": "success",
        "data": {"status": "UP", "version": __version__, "catalogVersion": served.manager.snapshot.version},
    }


def test_health_reports_the_new_catalog_version(client: httpx.Client, served: Served) -> None:
    before = client.get("/healthz").json()["data"]["catalogVersion"]
    served.manager.reload()
    assert client.get("/healthz").json()["data"]["catalogVersion"] == before + 1


def test_unknown_route_is_an_envelope(client: httpx.Client) -> None:
    assert_error(client.get("/api/ap/nothing"), 404)


