"""Development tools that ship with the product: the fake upstream and the demo model.

* ``FakeUpstream`` — a real loopback HTTP server speaking OpenAI chat-completions SSE
  and Anthropic messages SSE from scripts (used by tests, benchmarks and as the
  embedded default model); see ``app.devtools.fake_upstream``.
* Script steps and builders — ``app.devtools.script``.
* ``demo_responder`` — the scripted local model a fresh checkout runs with when no
  API key is configured; see ``app.devtools.demo_model``.
"""

from app.devtools.demo_model import demo_responder
from app.devtools.fake_upstream import Dialect, FakeUpstream, RecordedRequest, Responder
from app.devtools.script import (
    Disconnect,
    Finish,
    Gate,
    HttpError,
    Malformed,
    Pause,
    Reasoning,
    Script,
    Stall,
    Step,
    StreamError,
    Text,
    ToolArgs,
    ToolCall,
    Usage,
    http_error_script,
    parallel_tool_calls_script,
    script_from_json,
    script_to_json,
    text_script,
    tool_call_script,
)

__all__ = [
    "Dialect",
    "Disconnect",
    "FakeUpstream",
    "Finish",
    "Gate",
    "HttpError",
    "Malformed",
    "Pause",
    "Reasoning",
    "RecordedRequest",
    "Responder",
    "Script",
    "Stall",
    "Step",
    "StreamError",
    "Text",
    "ToolArgs",
    "ToolCall",
    "Usage",
    "demo_responder",
    "http_error_script",
    "parallel_tool_calls_script",
    "script_from_json",
    "script_to_json",
    "text_script",
    "tool_call_script",
]
