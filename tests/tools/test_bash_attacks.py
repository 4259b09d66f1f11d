"""THE ATTACK SUITE for ``_bash_`` (SPEC §3.3, §9): every attempt is refused with a clear
tool error before anything runs; the whitelisted commands do run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.errors import ToolError
from app.tools.bash import bash_tool
from tests.tools.conftest import make_settings

ALLOWED = ["ls", "cat", "wc", "echo", "sleep", "head", "false", "/usr/bin/printf"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (work / "sub" / "inner.txt").write_text("inner\n", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET\n", encoding="utf-8")
    (work / "link_out").symlink_to(secret)
    (work / "dir_out").symlink_to(tmp_path)
    return work


def _ctx(make_ctx: Any, workspace: Path, **bash: Any) -> Any:
    # These cases test the command policy (the first filter) on its own, with the configured
    # working directory of ``sandbox.mode: off``; the same attacks against the sandbox (the
    # boundary) run end to end in tests/security/test_tool_sandbox.py.
    settings = make_settings(
        workspace.parent,
        agent={"tools": {"bash": {"working-directory": str(workspace), "allowed-commands": ALLOWED, **bash},
                         "sandbox": {"mode": "off", "max-output-bytes": 65536}}},
    )
    return make_ctx(settings)


async def _refused(make_ctx: Any, workspace: Path, command: str, reason: str, **bash: Any) -> None:
    marker = workspace.parent / "pwned"
    with pytest.raises(ToolError, match=reason):
        await bash_tool({"command": command.replace("PWNED", str(marker))}, _ctx(make_ctx, workspace, **bash))
    assert not marker.exists()


STRICT_ATTACKS = [
    ("ls; touch PWNED", r"shell operator ';' is not allowed in strict mode"),
    ("ls && touch PWNED", r"shell operator '&' is not allowed"),
    ("ls || touch PWNED", r"shell operator '\|' is not allowed"),
    ("cat notes.txt | touch PWNED", r"shell operator '\|' is not allowed"),
    ("echo `touch PWNED`", r"shell operator '`' is not allowed"),
    ("echo $(touch PWNED)", r"shell operator '\$\(' is not allowed"),
    ("echo ${HOME}", r"shell operator '\$\{' is not allowed"),
    ("echo hi > PWNED", r"shell operator '>' is not allowed"),
    ("echo hi >> PWNED", r"shell operator '>' is not allowed"),
    ("cat < /etc/passwd", r"shell operator '<' is not allowed"),
    ("ls 2>&1", r"shell operator '&' is not allowed"),
    ("ls\ntouch PWNED", r"newlines are not allowed"),
    ("ls\rtouch PWNED", r"newlines are not allowed"),
    ("ls\x00touch PWNED", r"NUL"),
    ("ls ../", r"path '\.\./' is outside the allowed paths"),
    ("cat ../secret.txt", r"path '\.\./secret\.txt' is outside the allowed paths"),
    ("cat sub/../../secret.txt", r"outside the allowed paths"),
    ("cat /etc/passwd", r"path '/etc/passwd' is outside the allowed paths"),
    ("cat link_out", r"path 'link_out' is outside the allowed paths"),
    ("cat dir_out/secret.txt", r"outside the allowed paths"),
    ("ls dir_out", r"outside the allowed paths"),
    ("head --lines=1 --file=/etc/passwd", r"path '/etc/passwd' is outside"),
    ("head -n1 -- -/../../secret.txt", r"outside the allowed paths"),
    ("cat -o/etc/passwd", r"path '/etc/passwd' is outside"),
    ("FOO=1 ls", r"environment assignment 'FOO'"),
    ("env ls", r"command 'env' is not in the allowed commands"),
    ("/bin/ls", r"command '/bin/ls' is not in the allowed commands"),
    ("./ls", r"command '\./ls' is not in the allowed commands"),
    ("printf hi", r"command 'printf' is not in the allowed commands"),
    ("ls *", r"glob character '\*' is not allowed"),
    ("cat note?.txt", r"glob character '\?' is not allowed"),
    ("cat [n]otes.txt", r"glob character '\[' is not allowed"),
    ("rm -rf /", r"command 'rm' is not in the allowed commands"),
    ("bash -c 'touch PWNED'", r"command 'bash' is not in the allowed commands"),
    ("python3 -c 'print(1)'", r"command 'python3' is not in the allowed commands"),
    ("", r"empty command"),
    ("   ", r"empty command"),
    ("cat 'unbalanced", r"cannot parse the command"),
    # SPEC §14: values glued into option bundles are path-checked; exec-capable forms refused
    ("head -qn1/etc/passwd", r"path '/etc/passwd' is outside the allowed paths \(a value glued to the option"),
    ("head -n1 --lines=1 -c1link_out", r"path 'link_out' is outside the allowed paths"),
    ("wc --files0-from=names.txt", r"exec-capable form 'wc --files0-from' is refused"),
]


@pytest.mark.parametrize(("command", "reason"), STRICT_ATTACKS, ids=[repr(c) for c, _ in STRICT_ATTACKS])
async def test_strict_mode_refuses(make_ctx: Any, workspace: Path, command: str, reason: str) -> None:
    await _refused(make_ctx, workspace, command, reason)


async def test_overlong_command_is_refused(make_ctx: Any, workspace: Path) -> None:
    await _refused(make_ctx, workspace, "echo " + "a" * 200, r"too long \(205 characters; the limit is 100\)",
                   **{"max-command-chars": 100})


async def test_empty_whitelist_rejects_everything(make_ctx: Any, workspace: Path) -> None:
    await _refused(make_ctx, workspace, "ls", r"no commands are allowed", **{"allowed-commands": []})


async def test_command_must_be_a_string(make_ctx: Any, workspace: Path) -> None:
    with pytest.raises(ToolError, match="must be a string"):
        await bash_tool({"command": ["ls"]}, _ctx(make_ctx, workspace))


async def test_allowed_paths_restrict_to_listed_folders(make_ctx: Any, workspace: Path) -> None:
    ctx = _ctx(make_ctx, workspace, **{"allowed-paths": ["sub"]})
    ok = await bash_tool({"command": "cat sub/inner.txt"}, ctx)
    assert ok["stdout"] == "inner\n"
    with pytest.raises(ToolError, match="path 'notes.txt' is outside the allowed paths"):
        await bash_tool({"command": "cat notes.txt"}, ctx)


async def test_path_checked_commands_subset(make_ctx: Any, workspace: Path) -> None:
    # echo is not path-checked here, so its arguments are plain text
    ctx = _ctx(make_ctx, workspace, **{"path-checked-commands": ["cat"]})
    assert (await bash_tool({"command": "echo /etc/passwd"}, ctx))["stdout"] == "/etc/passwd\n"
    with pytest.raises(ToolError, match="outside the allowed paths"):
        await bash_tool({"command": "cat /etc/passwd"}, ctx)


# -- strict mode: what works ---------------------------------------------------------


async def test_ls_and_cat_report_exit_code_and_output(make_ctx: Any, workspace: Path) -> None:
    ctx = _ctx(make_ctx, workspace)
    listing = await bash_tool({"command": "ls sub"}, ctx)
    assert listing == {"exitCode": 0, "stdout": "inner.txt\n", "stderr": "", "workingDirectory": str(workspace)}
    cat = await bash_tool({"command": "cat 'notes.txt'"}, ctx)
    assert cat["exitCode"] == 0 and cat["stdout"] == "one\ntwo\nthree\n"
    quoted = await bash_tool({"command": 'echo "a  b" \'*\' \\?'}, ctx)
    assert quoted["stdout"] == "a  b * ?\n"


async def test_failing_command_reports_nonzero_exit(make_ctx: Any, workspace: Path) -> None:
    ctx = _ctx(make_ctx, workspace)
    missing = await bash_tool({"command": "cat nothing-here.txt"}, ctx)
    assert missing["exitCode"] != 0 and "nothing-here.txt" in missing["stderr"]
    assert (await bash_tool({"command": "false"}, ctx))["exitCode"] == 1


async def test_absolute_command_when_listed(make_ctx: Any, workspace: Path) -> None:
    result = await bash_tool({"command": "/usr/bin/printf hi"}, _ctx(make_ctx, workspace))
    assert result["stdout"] == "hi"


async def test_environment_is_minimal(make_ctx: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAILIAN_API_KEY", "sk-should-never-leak")
    ctx = _ctx(make_ctx, workspace, **{"path-checked-commands": ["ls"]})  # cat may read /proc here
    environ = await bash_tool({"command": "cat /proc/self/environ"}, ctx)
    names = {entry.split("=", 1)[0] for entry in environ["stdout"].split("\x00") if entry}
    assert names <= {"PATH", "LANG", "HOME"}
    assert "sk-should-never-leak" not in environ["stdout"]


async def test_timeout_kills_the_process(make_ctx: Any, workspace: Path) -> None:
    result = await bash_tool({"command": "sleep 5"}, _ctx(make_ctx, workspace, **{"shell-timeout-ms": 100}))
    assert result["timedOut"] is True and result["exitCode"] != 0
    assert "timed out" in result["stderr"]


async def test_output_is_capped(make_ctx: Any, workspace: Path) -> None:
    (workspace / "big.txt").write_text("x" * 200_000, encoding="utf-8")
    result = await bash_tool({"command": "cat big.txt"}, _ctx(make_ctx, workspace))
    assert result["truncated"] is True and len(result["stdout"]) == 64 * 1024


# -- shell mode ------------------------------------------------------------------------

SHELL = {"shell-features-enabled": True}

SHELL_ATTACKS = [
    ("cat notes.txt | touch PWNED", r"command 'touch' is not in the allowed commands"),
    ("ls && touch PWNED", r"command 'touch' is not in the allowed commands"),
    ("false || touch PWNED", r"command 'touch' is not in the allowed commands"),
    ("ls; touch PWNED", r"command 'touch' is not in the allowed commands"),
    ("ls\ntouch PWNED", r"command 'touch' is not in the allowed commands"),
    ("echo hi > ../escape.txt", r"path '\.\./escape\.txt' is outside the allowed paths"),
    ("echo hi >> /tmp/escape.txt", r"path '/tmp/escape\.txt' is outside the allowed paths"),
    ("cat < /etc/passwd", r"path '/etc/passwd' is outside the allowed paths"),
    ("echo hi > link_out", r"path 'link_out' is outside the allowed paths"),
    ("ls &> ../x", r"outside the allowed paths"),
    ("ls >&../x", r"outside the allowed paths"),
    ("echo $(touch PWNED)", r"command substitution '\$\(' is not allowed"),
    ("echo \"$(touch PWNED)\"", r"command substitution '\$\(' is not allowed"),
    ("echo `touch PWNED`", r"backticks is not allowed"),
    ("echo ${HOME}", r"parameter expansion '\$\{' is not allowed"),
    ("cat $HOME/.bashrc", r"'\$' expansions are not allowed"),
    ("cat <(ls)", r"process substitution <\( is not allowed"),
    ("ls > >(cat)", r"process substitution >\( is not allowed"),
    ("(touch PWNED)", r"subshells"),
    ("{ touch PWNED; }", r"brace expansion, groups"),
    ("cat {/etc/passwd,notes.txt}", r"brace expansion"),
    ("cat ~/.bashrc", r"tilde expansion"),
    ("cat /etc/pass*", r"glob character '\*'"),
    ("sleep 5 &", r"background execution"),
    ("ls |& wc", r"shell operator '\|&' is not allowed"),
    ("ls # ; touch PWNED", r"comments"),
    ("FOO=bar ls", r"environment assignment 'FOO'"),
    ("cat \"<<\" /etc/passwd", r"path '/etc/passwd' is outside"),
    ("ls\x00", r"NUL"),
    ("ls\r\ntouch PWNED", r"carriage returns"),
    ("cat <<EOF\n$(touch PWNED)\nEOF", r"here-document with an unquoted delimiter"),
    ("cat <<EOF\nnever ends", r"unterminated here-document"),
    ("cat <<'EOF'\nx\nEOF\ntouch PWNED", r"command 'touch' is not in the allowed commands"),
    ("> notes.txt", r"a redirect without a command"),
    ("ls |", r"without a command after it"),
    ("| ls", r"without a command before it"),
    ("cat 'open", r"unbalanced single quote"),
    # SPEC §14: file names from stdin escape the path check
    ("cat notes.txt | wc --files0-from=-", r"exec-capable form 'wc --files0-from' is refused"),
]


@pytest.mark.parametrize(("command", "reason"), SHELL_ATTACKS, ids=[repr(c) for c, _ in SHELL_ATTACKS])
async def test_shell_mode_refuses(make_ctx: Any, workspace: Path, command: str, reason: str) -> None:
    await _refused(make_ctx, workspace, command, reason, **SHELL)


async def test_shell_pipeline_of_whitelisted_commands_works(make_ctx: Any, workspace: Path) -> None:
    result = await bash_tool({"command": "cat notes.txt | wc -l"}, _ctx(make_ctx, workspace, **SHELL))
    assert result["exitCode"] == 0 and result["stdout"].strip() == "3"


async def test_shell_redirects_and_heredoc_inside_the_workspace(make_ctx: Any, workspace: Path) -> None:
    ctx = _ctx(make_ctx, workspace, **SHELL)
    command = "cat <<'EOF' > sub/out.txt && wc -l < sub/out.txt 2>/dev/null\nalpha $NOT_EXPANDED\nbeta\nEOF\n"
    result = await bash_tool({"command": command}, ctx)
    assert result["exitCode"] == 0 and result["stdout"].strip() == "2"
    assert (workspace / "sub" / "out.txt").read_text() == "alpha $NOT_EXPANDED\nbeta\n"
    chained = await bash_tool({"command": "false || echo recovered; ls sub 2>&1"}, ctx)
    assert chained["stdout"] == "recovered\ninner.txt\nout.txt\n"


async def test_shell_mode_timeout_kills_the_group(make_ctx: Any, workspace: Path) -> None:
    ctx = _ctx(make_ctx, workspace, **SHELL, **{"shell-timeout-ms": 100})
    result = await bash_tool({"command": "sleep 5 | cat"}, ctx)
    assert result["timedOut"] is True


async def test_attack_thousands_of_nested_at_signs_are_checked_not_a_crash(make_ctx: Any, workspace: Path) -> None:
    """``@file`` and ``name=value`` are unwrapped nested; 3,000 ``@`` went deeper than Python
    recurses and the RecursionError ended the whole run as an internal error."""
    for word in ("@" * 3000, "a=" * 3000 + "x", "a=@" * 2000 + "x"):
        result = await bash_tool({"command": f"cat {word}"}, _ctx(make_ctx, workspace))
        assert result["exitCode"] == 1 and result["stderr"].startswith("cat: ")  # checked, then run
    await _refused(make_ctx, workspace, "cat " + "@" * 3000 + "/etc/passwd", "outside the allowed paths")


async def test_attack_long_option_bundle_is_checked_once_per_distinct_path(
    make_ctx: Any, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every suffix of a bundle is a candidate value (``-Rf/etc/passwd``), and each one was
    resolved: 16 KB of ``-aaa…/b/b/…`` took 37 s of the event loop. Candidates whose first name
    does not exist resolve alike, so one stands for all; a first name that exists (a link out of
    the workspace) is still checked on its own."""
    resolved: list[Path] = []
    real_resolve = Path.resolve

    def counting_resolve(self: Path, strict: bool = False) -> Path:
        resolved.append(self)
        return real_resolve(self, strict=strict)

    monkeypatch.setattr(Path, "resolve", counting_resolve)
    ctx = _ctx(make_ctx, workspace)
    resolved.clear()
    result = await bash_tool({"command": "cat -" + "A" * 3000 + "notes.txt"}, ctx)
    assert "invalid option" in result["stderr"]  # every reading stays inside: it ran (and cat has no -o)
    assert len(resolved) < 20, f"{len(resolved)} resolutions for one argument"
    await _refused(make_ctx, workspace, "cat -" + "A" * 3000 + "link_out", "path 'link_out' is outside")
