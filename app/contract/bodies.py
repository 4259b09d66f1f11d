"""The request bodies HTTP and the sidecar both accept (SPEC §4, §10, §15), validated with pydantic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.contract.nesting import depth_problem, too_deep


def _shallow(value: Any) -> Any:
    """Free-form JSON from the client, refused when it nests too deep to be written back out."""
    if too_deep(value):
        raise ValueError(depth_problem())
    return value


class QueryRequest(BaseModel):
    """The body of ``POST /api/ap/query`` (SPEC §4)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: str | None = Field(None, alias="requestId", max_length=128)
    chat_id: str | None = Field(None, alias="chatId", max_length=128)
    agent_key: str | None = Field(None, alias="agentKey", max_length=128)
    role: str = Field("user", max_length=32)
    message: str = Field(max_length=200_000)
    references: list[Any] | None = None
    params: dict[str, Any] | None = None
    scene: Any | None = None
    stream: bool = True
    #: SPEC §15: what a client disconnect does to the run; ``None`` = ``agent.runs.on-disconnect``
    on_disconnect: Literal["cancel", "continue"] | None = Field(None, alias="onDisconnect")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be empty")
        return value

    @field_validator("references", "params", "scene")
    @classmethod
    def _free_json(cls, value: Any) -> Any:
        return _shallow(value)

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("user", "system", "assistant"):
            raise ValueError("role must be user, system or assistant")
        return value

    def as_memory(self, chat_id: str, agent_key: str, request_id: str) -> dict[str, Any]:
        return {
            "requestId": request_id, "chatId": chat_id, "agentKey": agent_key, "role": self.role,
            "message": self.message, "references": self.references, "params": self.params,
            "scene": self.scene, "stream": self.stream,
        }


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runId: str = Field(min_length=1, max_length=128)
    toolId: str = Field(min_length=1, max_length=128)
    params: Any = None

    @field_validator("params")
    @classmethod
    def _free_json(cls, value: Any) -> Any:
        return _shallow(value)
