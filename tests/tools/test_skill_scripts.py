"""``_skill_run_script_`` and the repository's skill scripts (SPEC §3.3, §3.4, §9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from app.errors import ToolError
from app.tools.skill_script import run_skill_script
from tests.tools.conftest import REPO


async def _run(make_ctx: Any, **args: Any) -> dict[str, Any]:
    return await run_skill_script(args, make_ctx())


def _json(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(result["stdout"])


# -- the scripts ------------------------------------------------------------------------


async def test_math_basic(make_ctx: Any) -> None:
    result = await _run(make_ctx, skill="math_basic", script="scripts/calc.py", args=["--op", "mul", "--a", "2", "--b", "3"])
    assert result["exitCode"] == 0 and result["timedOut"] is False
    assert result["stdout"].strip() == '{"ok":true,"op":"mul","a":2.0,"b":3.0,"result":6.0}'
    div = await _run(make_ctx, skill="math_basic", script="scripts/calc.py",
                     args=["--op", "div", "--a", "1", "--b", "3", "--precision", "3"])
    assert _json(div)["result"] == 0.333
    for bad in (["--op", "div", "--a", "1", "--b", "0"], ["--op", "root", "--a", "1", "--b", "2"], ["--op", "add", "--a", "x", "--b", "1"], []):
        failed = await _run(make_ctx, skill="math_basic", script="scripts/calc.py", args=bad)
        assert failed["exitCode"] == 2 and _json(failed)["ok"] is False and _json(failed)["error"]


async def test_math_stats(make_ctx: Any) -> None:
    summary = _json(await _run(make_ctx, skill="math_stats", script="scripts/stats.py", args=["--values", "1,2,3,4", "--metric", "summary"]))
    assert summary == {
        "ok": True, "metric": "summary", "count": 4, "sum": 10.0, "min": 1.0, "max": 4.0, "mean": 2.5,
        "median": 2.5, "mode": 1.0, "stdev": 1.290994, "modes": [1.0, 2.0, 3.0, 4.0],
    }
    mean = _json(await _run(make_ctx, skill="math_stats", script="scripts/stats.py", args=["--values", "2, 4,9", "--metric", "mean"]))
    assert mean == {"ok": True, "metric": "mean", "count": 3, "result": 5.0}
    bad = await _run(make_ctx, skill="math_stats", script="scripts/stats.py", args=["--values", "1,a"])
    assert bad["exitCode"] == 2 and _json(bad) == {"ok": False, "error": "not a number: 'a'"}


async def test_text_utils(make_ctx: Any) -> None:
    result = await _run(make_ctx, skill="text_utils", script="scripts/text_metrics.py",
                        args=["--text", "hello   world", "--normalize-space"])
    assert result["stdout"].strip() == '{"ok":true,"chars":11,"words":2,"lines":1,"normalizedText":"hello world"}'
    raw = _json(await _run(make_ctx, skill="text_utils", script="scripts/text_metrics.py", args=["--text", "a b\n你好"]))
    assert raw == {"ok": True, "chars": 6, "words": 3, "lines": 2, "normalizedText": "a b\n你好"}
    missing = await _run(make_ctx, skill="text_utils", script="scripts/text_metrics.py", args=[])
    assert missing["exitCode"] == 2 and _json(missing)["ok"] is False


async def test_screenshot_demo_echo(make_ctx: Any) -> None:
    result = _json(await _run(make_ctx, skill="screenshot", script="scripts/demo_echo.py", args=["x"]))
    assert result["ok"] is True and result["args"] == ["x"]


def test_gif_creator_core_without_pillow_fails_clearly() -> None:
    folder = REPO / "skills" / "slack-gif-creator"
    easing = subprocess.run(
        [sys.executable, "-c", "from core.easing import interpolate; print(interpolate(0, 400, 1.0, 'bounce_out'))"],
        cwd=folder, capture_output=True, text=True, check=True,
    )
    assert easing.stdout.strip() == "400.0"
    try:
        import PIL  # noqa: F401
    except ImportError:
        broken = subprocess.run(
            [sys.executable, "-c", "import core.gif_builder"], cwd=folder, capture_output=True, text=True
        )
        assert broken.returncode != 0 and "needs Pillow" in broken.stderr


# -- the tool -----------------------------------------------------------------------------


async def test_inline_python_runs_in_the_chat_workspace_and_is_removed(
    make_ctx: Any, skills: Any, deploy: Path
) -> None:
    before = set(Path(tempfile.gettempdir()).glob("agw-skill-inline-*"))
    code = "import os, sys, json; print(json.dumps({'file': __file__, 'cwd': os.getcwd(), 'argv': sys.argv[1:]}))"
    result = await _run(make_ctx, skill="math_basic", pythonCode=code, args=["a", "b"])
    data = _json(result)
    assert data["argv"] == ["a", "b"]
    # SPEC §14: the working directory is the chat's workspace; the code is a read-only file outside it
    assert Path(data["cwd"]) == (deploy / "data" / ".agw" / "workspaces" / "chat_test").resolve()
    assert data["file"].startswith("/run/agw/inline_")
    assert set(Path(tempfile.gettempdir()).glob("agw-skill-inline-*")) <= before  # the host copy is gone


async def test_inline_python_failure_reports_exit_code(make_ctx: Any) -> None:
    result = await _run(make_ctx, skill="math_basic", pythonCode="import sys; print('oops', file=sys.stderr); sys.exit(3)")
    assert result["exitCode"] == 3 and "oops" in result["stderr"]


async def test_inline_python_environment_is_minimal(make_ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAILIAN_API_KEY", "sk-never")
    result = await _run(make_ctx, skill="math_basic", pythonCode="import os, json; print(json.dumps(sorted(os.environ)))")
    assert set(_json(result)) <= {"PATH", "LANG", "HOME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "LC_CTYPE",
                                  "TMPDIR", "PWD"}


async def test_shell_script(make_ctx: Any, skills: Any) -> None:
    script = skills["screenshot"].folder / "scripts" / "hello.sh"
    script.write_text('echo "sh:$1"\n', encoding="utf-8")
    result = await _run(make_ctx, skill="screenshot", script="scripts/hello.sh", args=["ok"])
    assert result["stdout"] == "sh:ok\n" and result["exitCode"] == 0


async def test_timeout(make_ctx: Any) -> None:
    result = await _run(make_ctx, skill="math_basic", pythonCode="import time; time.sleep(10)", timeoutMs=200)
    assert result["timedOut"] is True and result["exitCode"] != 0


async def test_timeout_is_capped_by_the_tool_budget(make_ctx: Any) -> None:
    result = await run_skill_script(
        {"skill": "math_basic", "pythonCode": "import time; time.sleep(10)", "timeoutMs": 999_999},
        make_ctx(timeout_s=0.2),
    )
    assert result["timedOut"] is True


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("../math_stats/scripts/stats.py", "may not contain '..'"),
        ("scripts/../../math_stats/scripts/stats.py", "may not contain '..'"),
        ("/usr/bin/env", "must be relative"),
        (str(REPO / "skills" / "math_basic" / "scripts" / "calc.py"), "must be relative"),
        ("%2e%2e/math_stats/scripts/stats.py", "encoded separator|may not contain"),
        ("scripts\\calc.py", "invalid script"),
        ("SKILL.md", "must be a .py or .sh file"),
        ("scripts/missing.py", "does not exist"),
        ("scripts/outside.py", "leaves its folder"),
        ("scripts/outside_dir/x.py", "leaves its folder"),
    ],
)
async def test_script_escapes_are_refused(make_ctx: Any, skills: Any, tmp_path: Path, script: str, reason: str) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("print('escaped')\n", encoding="utf-8")
    (tmp_path / "x.py").write_text("print('escaped')\n", encoding="utf-8")
    scripts = skills["math_basic"].folder / "scripts"
    (scripts / "outside.py").symlink_to(outside)
    (scripts / "outside_dir").symlink_to(tmp_path)
    with pytest.raises(ToolError, match=reason):
        await _run(make_ctx, skill="math_basic", script=script)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"skill": "slack-gif-creator", "script": "core/easing.py"}, "not one of this agent's skills"),
        ({"skill": "unknown", "script": "x.py"}, "not one of this agent's skills"),
        ({"skill": "../math_basic", "script": "scripts/calc.py"}, "invalid skill"),
        ({"script": "scripts/calc.py"}, "'skill' is required"),
        ({"skill": "math_basic"}, "exactly one of 'script' and 'pythonCode'"),
        ({"skill": "math_basic", "script": "scripts/calc.py", "pythonCode": "print(1)"}, "exactly one"),
        ({"skill": "math_basic", "script": "scripts/calc.py", "args": "--op add"}, "list of strings"),
        ({"skill": "math_basic", "script": "scripts/calc.py", "args": [1, 2]}, "list of strings"),
        ({"skill": "math_basic", "script": "scripts/calc.py", "timeoutMs": "soon"}, "timeoutMs"),
    ],
)
async def test_bad_arguments(make_ctx: Any, args: dict[str, Any], reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        await run_skill_script(args, make_ctx())


async def test_no_agent_means_no_skills(make_ctx: Any) -> None:
    with pytest.raises(ToolError, match="not one of this agent's skills"):
        await run_skill_script({"skill": "math_basic", "script": "scripts/calc.py"}, make_ctx(agent=None))


def test_private_temp_dir_is_not_world_readable() -> None:
    # mkdtemp creates 0700 folders: other local users cannot swap the inline file
    import tempfile

    folder = tempfile.mkdtemp(prefix="agw-skill-inline-")
    try:
        assert os.stat(folder).st_mode & 0o077 == 0
    finally:
        os.rmdir(folder)
