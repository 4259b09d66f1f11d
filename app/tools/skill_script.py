"""``_skill_run_script_``: run a skill's script or inline Python (SPEC §3.3, §3.4, §9).

``{skill, script | pythonCode, args[], timeoutMs}``. The skill must be one of the
running agent's skills. ``script`` is confined to the skill folder (no ``..``, no
absolute path, no symlink out) and must be ``.py`` (run with the gateway's Python; in the one-file
executable with ``python3`` from the PATH, see ``app.tools.interpreter``) or
``.sh`` (run with bash). ``pythonCode`` is written to a file in a private temporary
folder, bound read-only into the sandbox, run, and always removed. Everything runs in
the tool sandbox (SPEC §14): the chat's workspace is the working directory, the skill's
folder is read-only, the environment is the sandbox's plus ``PYTHONPATH=<skill folder>``
(so a skill's own modules import, e.g. ``from core.gif_builder import …``). With
``agent.tools.sandbox.mode: off`` the working directory is the skill folder. Timeout: default 10 s,
clamped to 120 s and to the tool budget. Result: ``{exitCode, stdout, stderr, timedOut}``
(+ ``truncated`` when output was capped).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
import uuid
from pathlib import Path
from typing import Any

from app.catalog.definitions import SkillDefinition
from app.errors import PathEscapeError, ToolError
from app.paths import check_key, confine
from app.tools.base import ToolContext
from app.tools.interpreter import python_command
from app.tools.sandbox import Mount

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 10_000
MAX_TIMEOUT_MS = 120_000
_INTERPRETERS: dict[str, Callable[[], str]] = {".py": python_command, ".sh": lambda: "bash"}


def _find_skill(name: Any, ctx: ToolContext) -> SkillDefinition:
    if not isinstance(name, str) or not name.strip():
        raise ToolError("'skill' is required")
    try:
        key = check_key(name.strip(), "skill").lower()
    except PathEscapeError as exc:
        raise ToolError(exc.message) from exc
    skills = ctx.agent.skills if ctx.agent is not None else ()
    for skill in skills:
        if skill.id.lower() == key:
            return skill
    available = ", ".join(s.id for s in skills) or "none"
    raise ToolError(f"skill {name!r} is not one of this agent's skills (available: {available})")


def _timeout_s(value: Any, ctx: ToolContext) -> float:
    if value is None:
        timeout_ms = DEFAULT_TIMEOUT_MS
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError("'timeoutMs' must be a number of milliseconds")
    else:
        timeout_ms = min(max(int(value), 1), MAX_TIMEOUT_MS)
    return min(timeout_ms / 1000.0, ctx.timeout_s)


def _script_path(skill: SkillDefinition, script: str) -> Path:
    try:
        path = confine(skill.folder, script, "script")
    except PathEscapeError as exc:
        raise ToolError(exc.message) from exc
    if path.suffix not in _INTERPRETERS:
        raise ToolError(f"script {script!r} must be a .py or .sh file")
    if not path.is_file():
        raise ToolError(f"script {script!r} does not exist in skill {skill.id!r}")
    return path


async def run_skill_script(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The ``_skill_run_script_`` built-in."""
    skill = _find_skill(args.get("skill"), ctx)
    raw_script, raw_code = args.get("script"), args.get("pythonCode")
    script = raw_script if isinstance(raw_script, str) else ""
    code = raw_code if isinstance(raw_code, str) else ""
    has_script = bool(script.strip())
    has_code = bool(code.strip())
    if has_script == has_code:
        raise ToolError("pass exactly one of 'script' and 'pythonCode'")
    script_args = args.get("args")
    if script_args is None:
        script_args = []
    if not isinstance(script_args, list) or not all(isinstance(a, str) for a in script_args):
        raise ToolError("'args' must be a list of strings")
    if any("\x00" in a for a in script_args):
        raise ToolError("'args' may not contain NUL bytes")
    timeout_s = _timeout_s(args.get("timeoutMs"), ctx)
    folder = skill.folder.resolve()
    sandbox = ctx.process_sandbox()
    workspace = sandbox.workspace_for(ctx.chat_id)
    env = {"PYTHONPATH": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}

    if has_script:
        path = _script_path(skill, script.strip())
        argv = [_INTERPRETERS[path.suffix](), str(path), *script_args]
        logger.info("run %s: skill %s script %s", ctx.run_id, skill.id, path.relative_to(folder))
        result = await sandbox.run(
            argv, workspace=workspace, timeout_s=timeout_s, read_only=(folder,), env=env, cwd_off=folder
        )
    else:
        private_dir = Path(tempfile.mkdtemp(prefix="agw-skill-inline-"))  # mode 0700
        try:
            name = f"inline_{uuid.uuid4().hex}.py"
            path = private_dir / name
            path.write_text(code, encoding="utf-8")
            # inside the sandbox the code is a read-only file of its own, outside the workspace
            inside = Path("/run/agw") / name if sandbox.enabled else path
            logger.info("run %s: skill %s inline python (%d chars)", ctx.run_id, skill.id, len(code))
            result = await sandbox.run(
                [python_command(), str(inside), *script_args], workspace=workspace, timeout_s=timeout_s,
                read_only=(folder,), mounts=(Mount(path, inside),), env=env, cwd_off=folder,
            )
        finally:
            shutil.rmtree(private_dir, ignore_errors=True)

    out: dict[str, Any] = {
        "exitCode": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "timedOut": result.timed_out,
    }
    if result.truncated:
        out["truncated"] = True
    return out
