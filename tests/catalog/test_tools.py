"""Tool definition files (SPEC §3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.definitions import ToolKind
from app.catalog.tools import parse_tool, parse_tool_file
from app.errors import DefinitionError

from .support import Deployment, tool_item


@pytest.mark.parametrize(
    ("suffix", "kind"), [("backend", ToolKind.BACKEND), ("frontend", ToolKind.FRONTEND), ("action", ToolKind.ACTION)]
)
def test_suffix_decides_kind(deploy: Deployment, suffix: str, kind: ToolKind) -> None:
    deploy.write(f"tools/x.{suffix}", {"tools": [tool_item("t1")]})
    catalog = deploy.build()
    assert catalog.tools["t1"].kind is kind
    assert catalog.rejections == ()


def test_fields_are_mapped() -> None:
    tool = parse_tool(
        tool_item("weather", afterCallHint="render show_weather_card", toolApi="https://api.example.com/w"),
        ToolKind.BACKEND,
    )
    assert tool.after_call_hint == "render show_weather_card"
    assert tool.tool_api == "https://api.example.com/w"
    assert tool.tool_type is None and tool.tool_key is None
    assert tool.openai_schema()["function"]["name"] == "weather"


def test_frontend_defaults_to_html_viewport_named_after_the_tool() -> None:
    tool = parse_tool(tool_item("confirm_dialog"), ToolKind.FRONTEND)
    assert (tool.tool_type, tool.tool_key) == ("html", "confirm_dialog")


def test_frontend_tool_type_and_key() -> None:
    tool = parse_tool(tool_item("pick", toolType="qlc", toolKey="picker_form"), ToolKind.FRONTEND)
    assert (tool.tool_type, tool.tool_key) == ("qlc", "picker_form")


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (tool_item("t", type="other"), "type"),
        ({"type": "function", "description": "d", "parameters": {}}, "name"),
        ({"type": "function", "name": "t", "parameters": {}}, "description"),
        ({"type": "function", "name": "t", "description": "d"}, "parameters"),
        (tool_item("t", parameters=[]), "parameters"),
        (tool_item("t", parameters={"type": "string"}), "parameters"),
        (tool_item("bad name!"), "name"),
        (tool_item("t", toolApi="ftp://example.com/x"), "toolApi"),
        (tool_item("t", toolApi="not a url"), "toolApi"),
        (tool_item("t", strict=True), "strict: unknown field"),
    ],
)
def test_invalid_items_are_rejected(item: dict[str, Any], match: str) -> None:
    with pytest.raises(DefinitionError, match=match):
        parse_tool(item, ToolKind.BACKEND)


def test_tool_api_only_on_backend() -> None:
    with pytest.raises(DefinitionError, match="toolApi is only allowed in .backend"):
        parse_tool(tool_item("t", toolApi="http://x.example"), ToolKind.ACTION)


def test_tool_type_only_on_frontend() -> None:
    with pytest.raises(DefinitionError, match="toolType/toolKey are only allowed in .frontend"):
        parse_tool(tool_item("t", toolType="html"), ToolKind.BACKEND)


def test_file_must_hold_a_tools_list() -> None:
    with pytest.raises(DefinitionError, match="tools"):
        parse_tool_file({"items": []}, ToolKind.BACKEND)


def test_bad_item_is_reported_and_the_rest_of_the_file_loads(deploy: Deployment) -> None:
    deploy.write("tools/mixed.backend", {"tools": [tool_item("good"), {"type": "function", "name": "bad"}]})
    catalog = deploy.build()
    assert list(catalog.tools) == ["good"]
    (rejection,) = catalog.rejections
    assert rejection.kind == "tool" and rejection.file == "tools/mixed.backend"
    assert rejection.reason.startswith("tools[1] (bad): ")


def test_duplicate_name_across_files_keeps_the_first_in_sorted_order(deploy: Deployment) -> None:
    deploy.write("tools/b.action", {"tools": [tool_item("same"), tool_item("other")]})
    deploy.write("tools/a.backend", {"tools": [tool_item("same")]})
    catalog = deploy.build()
    assert catalog.tools["same"].kind is ToolKind.BACKEND
    assert "other" in catalog.tools
    (rejection,) = catalog.rejections
    assert rejection.file == "tools/b.action"
    assert "'same'" in rejection.reason and "tools/a.backend" in rejection.reason and "tools/b.action" in rejection.reason


def test_unparseable_file_is_rejected_others_load(deploy: Deployment) -> None:
    deploy.write("tools/ok.backend", {"tools": [tool_item("ok")]})
    deploy.write("tools/broken.frontend", '{"tools": [\n  {"name": }\n]}')
    catalog = deploy.build()
    assert list(catalog.tools) == ["ok"]
    (rejection,) = catalog.rejections
    assert rejection.file == "tools/broken.frontend" and rejection.reason.startswith("line 2,")


def test_other_suffixes_and_hidden_files_are_ignored(deploy: Deployment) -> None:
    deploy.write("tools/README.md", "# tools")
    deploy.write("tools/.x.backend", "{")
    assert deploy.build().rejections == ()


def test_missing_folder_is_empty(deploy: Deployment) -> None:
    catalog = deploy.build()
    assert catalog.tools == {} and catalog.rejections == ()
