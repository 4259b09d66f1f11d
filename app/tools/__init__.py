"""Built-in tool implementations, HTTP tools and argument templates (SPEC §3.3).

* ``base`` — ``ToolContext``, ``BuiltinTool``
* ``registry`` — ``builtin_tools()``, ``ENGINE_TOOLS``, ``builtin_tool_names()``
* ``templates`` — ``resolve_templates(args, results)``
* ``http_tool`` — ``call_http_tool(tool, args, ctx)``
* one module per tool: ``bash`` (+ ``bash_policy``), ``skill_script``,
  ``agent_file_create``, ``city_datetime``, ``mocks``, ``sensitive_data``
"""

from app.tools.base import BuiltinTool, ToolContext
from app.tools.http_tool import call_http_tool
from app.tools.registry import ENGINE_TOOLS, builtin_tool_names, builtin_tools
from app.tools.templates import resolve_templates

__all__ = [
    "ENGINE_TOOLS",
    "BuiltinTool",
    "ToolContext",
    "builtin_tool_names",
    "builtin_tools",
    "call_http_tool",
    "resolve_templates",
]
