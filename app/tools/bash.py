"""``_bash_``: run one whitelisted command (SPEC §3.3 "Built-in tools", §2 bash settings).

The policy (what may run) lives in ``bash_policy``; this module builds it from the
settings and runs the command: in strict mode directly (no shell), in shell mode
through ``shell-executable -c`` — always inside the tool sandbox (``sandbox``, SPEC §14):
the chat's workspace as working directory, the allowed paths read-only, the gateway's
state hidden. The policy is the first filter, the sandbox the boundary. Both get a
minimal environment, a closed stdin, the timeout (the whole process group is killed)
and capped output. Result: ``{exitCode, stdout, stderr, workingDirectory, truncated?, timedOut?}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.config import BashSettings, Settings
from app.errors import ToolError
from app.tools.base import ToolContext
from app.tools.bash_policy import BashPolicy, check_shell, check_strict

logger = logging.getLogger(__name__)


def working_directory(settings: Settings) -> Path:
    """``agent.tools.bash.working-directory`` (default: the deployment folder), resolved.
    Used only with ``agent.tools.sandbox.mode: off``; sandboxed calls work in the chat's workspace."""
    configured = settings.agent.tools.bash.working_directory
    return settings.resolve(configured) if configured else settings.base_dir.resolve()


def allowed_roots(settings: Settings, base: Path) -> tuple[Path, ...]:
    """``allowed-paths`` resolved (relative ones against ``base``)."""
    return tuple(
        (Path(p).expanduser() if Path(p).expanduser().is_absolute() else base / p).resolve()
        for p in settings.agent.tools.bash.allowed_paths
    )


def build_policy(settings: Settings, workspace: Path | None = None) -> BashPolicy:
    """The policy of one call: with a ``workspace`` (sandboxed) the workspace is the working
    directory and always allowed, and relative allowed paths are under the deployment folder;
    without one (``mode: off``) everything is relative to ``working-directory``."""
    bash: BashSettings = settings.agent.tools.bash
    if workspace is not None:
        workdir = workspace
        roots = (workspace, *allowed_roots(settings, settings.base_dir.resolve()))
    else:
        workdir = working_directory(settings)
        roots = allowed_roots(settings, workdir) or (workdir,)
    return BashPolicy(
        working_directory=workdir,
        allowed_roots=roots,
        allowed_commands=frozenset(bash.allowed_commands),
        path_checked_commands=frozenset(bash.path_checked_commands),
        max_command_chars=bash.max_command_chars,
        exec_capable_commands=frozenset(bash.exec_capable_commands),
    )


async def bash_tool(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The ``_bash_`` built-in: ``{command}`` → ``{exitCode, stdout, stderr, workingDirectory, …}``."""
    command = args.get("command")
    if not isinstance(command, str):
        raise ToolError("'command' must be a string")
    bash = ctx.settings.agent.tools.bash
    sandbox = ctx.process_sandbox()
    workspace = sandbox.workspace_for(ctx.chat_id) if sandbox.enabled else None
    policy = build_policy(ctx.settings, workspace)
    if bash.shell_features_enabled:
        check_shell(command, policy)
        argv = [bash.shell_executable, "-c", command]
    else:
        argv = check_strict(command, policy)
    if not policy.working_directory.is_dir():
        raise ToolError(f"the working directory {str(policy.working_directory)!r} does not exist")
    timeout_s = min(bash.shell_timeout_ms / 1000.0, ctx.timeout_s)
    logger.info("run %s: _bash_ %s", ctx.run_id, argv[0] if not bash.shell_features_enabled else "(shell)")
    read_only = allowed_roots(ctx.settings, ctx.settings.base_dir.resolve())
    result = await sandbox.run(
        argv, workspace=policy.working_directory, timeout_s=timeout_s, read_only=read_only,
        cwd_off=policy.working_directory,
    )
    out: dict[str, Any] = {
        "exitCode": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "workingDirectory": str(policy.working_directory),
    }
    if result.truncated:
        out["truncated"] = True
    if result.timed_out:
        out["timedOut"] = True
        out["stderr"] = (result.stderr + f"\n[killed: timed out after {int(timeout_s * 1000)} ms]").lstrip("\n")
    return out
