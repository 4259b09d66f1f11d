"""``Sandbox`` on its own with the real ``bwrap`` (SPEC §14): settings that change what a
sandboxed process sees — network, environment pass-through, allowed paths, ``mode: off``.
The end-to-end attack suite is tests/security/test_tool_sandbox.py."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from app.errors import ToolError
from app.tools.sandbox import Sandbox
from tests.tools.conftest import make_settings


def _sandbox(deploy: Path, **sandbox: Any) -> Sandbox:
    return Sandbox(make_settings(deploy, agent={"tools": {"sandbox": sandbox}}))


async def _python(box: Sandbox, code: str, **kwargs: Any) -> Any:
    return await box.run([sys.executable, "-c", code], workspace=box.workspace_for("chat_x"), timeout_s=20, **kwargs)


@pytest.mark.parametrize("network", [False, True])
async def test_network_only_when_enabled(deploy: Path, network: bool) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
                "    print('connected')\nexcept OSError:\n    print('no network')")
        result = await _python(_sandbox(deploy, network=network), code)
    assert result.stdout.strip() == ("connected" if network else "no network")


async def test_env_passthrough_names_only(deploy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOL_REGION", "eu-1")
    monkeypatch.setenv("PROVIDER_SECRET", "sk-never")
    result = await _python(_sandbox(deploy, **{"env-passthrough": "TOOL_REGION"}),
                           "import os, json; print(json.dumps(dict(os.environ)))")
    assert '"TOOL_REGION": "eu-1"' in result.stdout and "sk-never" not in result.stdout


@pytest.mark.parametrize("path", ["/", "/proc", "/sys", "/dev", "/run"])
async def test_attack_allowed_path_exposing_system_roots_is_refused(deploy: Path, path: str) -> None:
    box = _sandbox(deploy)
    with pytest.raises(ToolError, match="would expose the host's root"):
        await box.run(["true"], workspace=box.workspace_for("chat_x"), timeout_s=5, read_only=[Path(path)])


async def test_attack_allowed_path_inside_chats_is_not_exposed(deploy: Path) -> None:
    (deploy / "chats" / "sub").mkdir(parents=True)
    (deploy / "chats" / "sub" / "c.json").write_text("CHAT-MARKER")
    box = _sandbox(deploy)
    result = await _python(box, f"print(open('{deploy}/chats/sub/c.json').read())", read_only=[deploy / "chats" / "sub"])
    assert "CHAT-MARKER" not in result.stdout and result.exit_code != 0


async def test_attack_allowed_data_folder_shows_other_chats_screenshots(deploy: Path) -> None:
    """``data/`` is a natural allowed path (the operator's data files); the browser's screenshots
    of every chat's pages live in ``data/screenshots`` and must stay out of sight."""
    (deploy / "data" / "screenshots").mkdir(parents=True)
    (deploy / "data" / "screenshots" / "shot_victim.png").write_text("VICTIM-SCREENSHOT")
    (deploy / "data" / "report.csv").write_text("OPERATOR-DATA")
    box = _sandbox(deploy)
    code = (f"import os\nprint(open('{deploy}/data/report.csv').read())\n"
            f"print(os.listdir('{deploy}/data/screenshots'))")
    result = await _python(box, code, read_only=[deploy / "data"])
    assert result.stdout.split("\n")[:2] == ["OPERATOR-DATA", "[]"], result.stdout + result.stderr


async def test_attack_chat_id_names_another_folder(deploy: Path) -> None:
    box = _sandbox(deploy)
    for chat_id in ("../victim", "a/b", "", "..", "x" * 200):
        with pytest.raises(ToolError):
            box.workspace_for(chat_id)


async def test_mode_off_runs_unconfined_and_warns(deploy: Path, caplog: pytest.LogCaptureFixture) -> None:
    (deploy / "application.yml").write_text("secret: OFF-MARKER")
    caplog.set_level(logging.WARNING, logger="app.tools.sandbox")
    result = await _python(_sandbox(deploy, mode="off"), f"print(open('{deploy}/application.yml').read())")
    assert "OFF-MARKER" in result.stdout
    assert any("sandbox is OFF" in record.getMessage() for record in caplog.records)


async def test_limits_apply_inside(deploy: Path) -> None:
    result = await _python(_sandbox(deploy, **{"memory-mb": 128}),
                           "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20, "
                           "resource.getrlimit(resource.RLIMIT_CPU)[0])")
    assert result.stdout.split() == ["128", "30"]


async def test_attack_host_secrets_in_etc_and_home_are_not_visible(deploy: Path) -> None:
    """Only a short list of /etc is bound: never shadow, sudoers, TLS private keys or root's home."""
    probes = ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssl/private", "/etc/ssh", "/root/.ssh",
              "/root/.bash_history", "/home", "/var/log", "/etc/passwd"]
    code = f"import os, json; print(json.dumps([p for p in {probes!r} if os.path.exists(p)]))"
    result = await _python(_sandbox(deploy), code)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert "/etc/ssl/certs" in (await _python(_sandbox(deploy), "import os; print(os.path.isdir('/etc/ssl/certs') "
                                              "and '/etc/ssl/certs')")).stdout


async def test_attack_filling_tmp_and_dev_beyond_the_memory_limit(deploy: Path) -> None:
    """/tmp, /dev/shm and /dev are in-memory filesystems that RLIMIT_AS does not count: three
    32 MiB files (each under RLIMIT_FSIZE) must not fit where the call's memory is 64 MiB."""
    box = _sandbox(deploy, **{"memory-mb": 64})
    script = (
        "for d in /tmp /dev/shm /dev; do n=0; for i in 1 2 3; do "
        "head -c 33554432 /dev/zero > $d/fill$i 2>/dev/null && n=$((n+1)); done; echo $d $n; done"
    )
    result = await box.run(["sh", "-c", script], workspace=box.workspace_for("chat_x"), timeout_s=30)
    written = {d: int(n) for d, n in (line.split() for line in result.stdout.splitlines())}
    assert set(written) == {"/tmp", "/dev/shm", "/dev"}, result.stdout + result.stderr
    assert written["/tmp"] < 3 and written["/dev/shm"] < 3 and written["/dev"] == 0, written


async def test_attack_tool_opens_host_sysctls_for_writing(deploy: Path) -> None:
    """A gateway running as root runs tools as the host's uid 0, which is all sysctl files ask:
    kernel.core_pattern set to ``|<workspace file>`` would run that file as root on the host at
    the next crash anywhere. Opening for writing is enough to tell (nothing is written)."""
    code = (
        "import os\n"
        "for path in ('/proc/sys/kernel/core_pattern', '/proc/sys/vm/overcommit_ratio'):\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_WRONLY))\n"
        "        print(path, 'writable')\n"
        "    except OSError as exc:\n"
        "        print(path, 'refused', exc.errno)\n"
    )
    result = await _python(_sandbox(deploy), code)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(" refused " in line for line in lines), result.stdout


@pytest.mark.parametrize("mode", ["bwrap", "off"])
async def test_a_process_that_uses_up_its_cpu_time_is_told_so(deploy: Path, mode: str) -> None:
    """The kernel's SIGXCPU prints nothing: without a note the tool answered a bare exit code."""
    result = await _python(_sandbox(deploy, mode=mode, **{"cpu-seconds": 1}), "while True:\n    pass")
    assert not result.timed_out and result.exit_code in (152, -24)
    assert "the CPU time limit of 1 s (agent.tools.sandbox.cpu-seconds) was used up" in result.stderr
