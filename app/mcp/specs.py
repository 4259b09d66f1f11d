"""MCP server definitions, ``mcp-servers/<serverKey>.json`` (SPEC §18).

Two shapes, told apart by ``transport``:

* ``{"transport": "stdio", "command": "…", "args": [], "env": {}, "cwd"?: "…", "sandbox"?: true}``
  — the gateway spawns the command and talks over its stdin/stdout; inside the tool sandbox
  (SPEC §14) unless ``"sandbox": false``;
* ``{"transport": "http", "url": "http(s)://…", "headers": {}}`` — streamable HTTP.

Both take ``timeoutMs`` (each tool call; default 60 000) and ``enabled`` (default true). Unknown
fields are refused, like every definition file; JSON comments and trailing commas are allowed.
The file name is the server key: a bare key without ``__`` (the separator of
``mcp__<serverKey>__<tool>``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.catalog._edge import read_object, validate
from app.catalog.mcp import SEPARATOR
from app.errors import DefinitionError, PathEscapeError
from app.paths import check_key

#: every tool call's default bound (``timeoutMs``)
DEFAULT_TIMEOUT_MS = 60_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class _Common(_Strict):
    timeout_ms: int = Field(DEFAULT_TIMEOUT_MS, alias="timeoutMs", gt=0, le=3_600_000)
    enabled: bool = True


class StdioServer(_Common):
    transport: Literal["stdio"]
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    #: relative to the deployment folder unless absolute; bound read-only inside the sandbox
    cwd: str | None = None
    sandbox: bool = True


class HttpServer(_Common):
    transport: Literal["http"]
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        return value


_WRAPPER_PATH = re.compile(r"\bserver\.(?:(?:stdio|http)\.)?")


class _File(BaseModel):
    server: Annotated[StdioServer | HttpServer, Field(discriminator="transport")]


ServerSpec = StdioServer | HttpServer


def check_server_key(stem: str) -> str:
    """The server key of ``<stem>.json``; ``DefinitionError`` naming what is wrong."""
    try:
        key = check_key(stem, "MCP server key")
    except PathEscapeError as exc:
        raise DefinitionError(exc.message) from exc
    if SEPARATOR in key:
        raise DefinitionError(f"MCP server key {key!r} may not contain '__' (it separates mcp__<serverKey>__<tool>)")
    if key.endswith("_"):  # mcp__files___echo would read as server 'files', tool '_echo'
        raise DefinitionError(f"MCP server key {key!r} may not end with '_' (it would run into the '__' after it)")
    return key


def parse_server(data: object) -> ServerSpec:
    """Validate one parsed server file."""
    if not isinstance(data, dict):
        raise DefinitionError("the top level must be a JSON object")
    if data.get("transport") not in ("stdio", "http"):
        raise DefinitionError(f"'transport' must be \"stdio\" or \"http\" (got {data.get('transport')!r})")
    try:
        return validate(_File, {"server": data}).server
    except DefinitionError as exc:  # name the file's own fields, not the wrapper's path
        raise DefinitionError(_WRAPPER_PATH.sub("", exc.message)) from exc


def load_server(path: Path) -> ServerSpec:
    """Read and validate ``mcp-servers/<key>.json``; ``DefinitionError`` with the reason."""
    check_server_key(path.stem)
    return parse_server(read_object(path))
