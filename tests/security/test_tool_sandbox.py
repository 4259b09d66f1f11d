"""THE SANDBOX ATTACK SUITE (SPEC §14), end to end: a scripted model calls ``_bash_`` and
``_skill_run_script_`` through the real gateway (uvicorn on a loopback port, the fake
upstream, real ``bwrap``), and every secret of the deployment is checked against every
``tool.result``, every SSE event, the attacker's chat file and every log line.

The secrets planted in the deployment:
* the provider API key in ``application.yml`` (``sk-test-secret-key-123``);
* a variable of the gateway's own environment (``AGW_MASTER_SECRET``);
* another user's chat (a real earlier run whose question carries ``VICTIM_CHAT``);
* encrypted-credential, schedule and other-workspace files under ``data/.agw``;
* a file outside the deployment, and ``/etc/passwd``.

The configuration is deliberately generous (``allowed-paths: .`` — the whole deployment —,
shell features on, interpreters and ``ln`` whitelisted): the policy lets much through, so the
sandbox is what is tested. A control gateway with ``sandbox.mode: off`` shows that the same
attacks DO leak without it, so the leak detector itself can fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, of_type
from tests.support.deployment import REPO, agent, make_deployment, write_agent
from tests.support.server import GatewayServer, wait_healthy
from tests.support.sse import collect


API_KEY = "sk-test-secret-key-123"
ENV_SECRET = "ENV-MARKER-9f3c1e"
VICTIM_CHAT = "VICTIM-CHAT-MARKER-51d2"
VICTIM_WS = "VICTIM-WORKSPACE-MARKER-77aa"
CRED = "CREDENTIAL-MARKER-0b6e"
SCHEDULE = "SCHEDULE-MARKER-c3d4"
OUTSIDE = "OUTSIDE-FILE-MARKER-e81f"
PASSWD = "root:x:0:0"
MARKERS = (API_KEY, ENV_SECRET, VICTIM_CHAT, VICTIM_WS, CRED, SCHEDULE, OUTSIDE, PASSWD)

COMMANDS = (
    "ls,cat,head,tail,wc,echo,date,pwd,ln,id,touch,mkdir,grep,find,sed,awk,tar,xargs,env,timeout,nice,"
    "nohup,stdbuf,dd,zip,python3,bash,sh,perl,curl,wget,git"
)
TOOLS = {"backends": ["_bash_", "_skill_run_script_"], "frontends": [], "actions": []}


def test_bwrap_is_installed() -> None:
    """The suite needs the real sandbox: CI installs Debian's ``bubblewrap`` (.ci/run)."""
    assert shutil.which("bwrap"), "bwrap is not installed: apt-get install bubblewrap (see .ci/run)"




def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    """One real gateway process (``python -m app serve``, DEBUG logs to a file) on a deployment
    full of secrets, shared by the whole module. Its environment carries ``AGW_MASTER_SECRET``."""

    def __init__(self, root: Path, upstream: FakeUpstream, outside: Path, yaml_extra: str) -> None:
        make_deployment(root, upstream.url, yaml_extra=yaml_extra)
        self.root = root
        self.upstream = upstream
        self.outside = outside
        write_agent(root, "attacker", agent("REACT", tools=TOOLS, skillConfig={"skills": ["math_basic", "evil"]}))
        evil = root / "skills" / "evil"
        (evil / "scripts").mkdir(parents=True)
        (evil / "SKILL.md").write_text("---\nname: evil\ndescription: scripts that misbehave\n---\nbody\n")
        (evil / "scripts" / "write_self.sh").write_text("echo pwned > \"$(dirname \"$0\")/pwned.txt\"; echo rc=$?\n")
        state = root / "data" / ".agw"
        (state / "workspaces" / "victim-ws").mkdir(parents=True)
        (state / "workspaces" / "victim-ws" / "secret.txt").write_text(VICTIM_WS)
        (state / "credentials.json").write_text(orjson.dumps({"entries": {"k": CRED}}).decode())
        (state / "schedules.json").write_text(orjson.dumps([{"message": SCHEDULE}]).decode())
        self.port = _free_port()
        self.log_file = root.parent / "gateway.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SERVER_", "MEMORY_"))}
        env["AGW_MASTER_SECRET"] = ENV_SECRET
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "--log-level", "DEBUG", "serve", "--port", str(self.port),
                 "--dir", str(root)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_healthy()
        self.victim_chat = self._victim_run()

    def _wait_healthy(self) -> None:
        if not wait_healthy(self.url, self.process):
            self.stop()
            raise RuntimeError(f"the gateway did not start: {self.logs()[-3000:]}")

    def _victim_run(self) -> str:
        self.upstream.enqueue(text_script(["noted"]))
        reply = httpx.post(f"{self.url}/api/ap/query", timeout=30,
                           json={"agentKey": "attacker", "message": f"my secret is {VICTIM_CHAT}", "stream": False})
        assert reply.status_code == 200, reply.text
        chat_id: str = reply.json()["data"]["chatId"]
        assert VICTIM_CHAT in (self.root / "chats" / f"{chat_id}.json").read_text()
        return chat_id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_size(self) -> int:
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def logs(self, since: int = 0) -> str:
        if not self.log_file.exists():
            return ""
        with self.log_file.open("rb") as log:
            log.seek(since)
            return log.read().decode("utf-8", "replace")

    def path(self, relative: str) -> str:
        return str(self.root / relative)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def shared_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _yaml(mode: str) -> str:
    return (
        "  tools:\n"
        "    bash:\n"
        f"      allowed-commands: {COMMANDS}\n"
        "      allowed-paths: .\n"
        "      shell-features-enabled: true\n"
        "    sandbox:\n"
        f"      mode: {mode}\n"
        "      cpu-seconds: 1\n"
        "      memory-mb: 256\n"
        "      max-output-bytes: 65536\n"
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, shared_upstream: FakeUpstream) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("sandbox")
    outside = base / "outside.txt"
    outside.write_text(OUTSIDE)
    deployment = Deployment(base / "deploy", shared_upstream, outside, _yaml("bwrap"))
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory: pytest.TempPathFactory, shared_upstream: FakeUpstream) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("nosandbox")
    outside = base / "outside.txt"
    outside.write_text(OUTSIDE)
    deployment = Deployment(base / "deploy", shared_upstream, outside, _yaml("off"))
    yield deployment
    deployment.stop()


class Attack:
    """What one attack produced: every event, the tool results, the attacker's chat file."""

    def __init__(self, events: list[dict[str, Any]], chat_text: str, log_offset: int) -> None:
        self.log_offset = log_offset
        self.events = events
        self.chat_text = chat_text
        self.results = [e["result"] for e in of_type(events, "tool.result")]

    @property
    def result(self) -> Any:
        assert len(self.results) == 1, self.results
        return self.results[0]

    @property
    def output(self) -> str:
        result = self.result
        return str(result.get("stdout", "")) + str(result.get("stderr", "")) + str(result.get("error", ""))

    def wire(self) -> str:
        return orjson.dumps(self.events).decode()


async def attack(deployment: Deployment, tool: str, args: dict[str, Any], *, chat_id: str | None = None) -> Attack:
    deployment.upstream.enqueue(call("t1", tool, args), text_script(["done"]))
    log_offset = deployment.log_size()
    body: dict[str, Any] = {"agentKey": "attacker", "message": "please run the tool"}
    if chat_id:
        body["chatId"] = chat_id
    async with httpx.AsyncClient(timeout=60) as client:
        events = await collect(client, f"{deployment.url}/api/ap/query", body)
    assert events[-1]["type"] == "run.complete", events[-1]
    chat = deployment.root / "chats" / f"{events[0]['chatId']}.json"
    return Attack(events, chat.read_text(encoding="utf-8"), log_offset)


def assert_no_leak(result: Attack, deployment: Deployment) -> None:
    logs = deployment.logs(since=result.log_offset)  # the attack's own log lines
    assert "DEBUG" in logs and result.events[0]["chatId"] in logs  # the log file is the gateway's, at DEBUG
    for marker in MARKERS:
        assert marker not in result.wire(), f"{marker} leaked into the SSE events"
        assert marker not in result.chat_text, f"{marker} leaked into the chat file"
        assert marker not in logs, f"{marker} leaked into the log"


def bash(command: str) -> dict[str, Any]:
    return {"command": command}


def py(code: str) -> dict[str, Any]:
    return {"skill": "math_basic", "pythonCode": code}


# -- _bash_ : the policy lets these through (allowed-paths: .), the sandbox stops them ----------

#: (name, command, leaks without the sandbox?) — the policy passes every case marked True
BASH_READS = [
    ("attack_bash_cat_application_yml_api_key", "cat {root}/application.yml", True),
    ("attack_bash_cat_other_users_chat", "cat {root}/chats/{victim}.json", True),
    ("attack_bash_grep_all_chats", "grep -r VICTIM {root}/chats", True),
    ("attack_bash_cat_encrypted_credentials", "cat {root}/data/.agw/credentials.json", True),
    ("attack_bash_cat_schedules", "cat {root}/data/.agw/schedules.json", False),
    ("attack_bash_cat_other_chat_workspace", "cat {root}/data/.agw/workspaces/victim-ws/secret.txt", True),
    ("attack_bash_list_other_workspaces", "ls -R {root}/data/.agw", False),
    ("attack_bash_date_Rf_etc_passwd", "date -Rf/etc/passwd", False),
    ("attack_bash_cat_etc_passwd", "cat /etc/passwd", False),
    ("attack_bash_cat_file_outside_deployment", "cat {outside}", False),
    ("attack_bash_proc_1_environ", "cat /proc/1/environ", False),
    ("attack_bash_proc_self_environ", "cat /proc/self/environ", False),
    ("attack_bash_proc_ppid_environ_via_shell", "cat /proc/1/environ /proc/2/environ", False),
    ("attack_bash_head_option_bundled_file", "head -n1 --file={root}/application.yml", False),
    ("attack_bash_find_whole_deployment", "find {root} -name '*.json'", False),
]


def _bash_read(gw: Deployment, command: str) -> dict[str, Any]:
    return bash(command.format(victim=gw.victim_chat, outside=gw.outside, root=gw.root))


@pytest.mark.parametrize(("name", "command", "leaks"), BASH_READS, ids=[n for n, _, _ in BASH_READS])
async def test_bash_cannot_read_gateway_state(gw: Deployment,
                                               name: str, command: str, leaks: bool) -> None:
    result = await attack(gw, "_bash_", _bash_read(gw, command))
    assert result.results, "the tool answered"
    assert_no_leak(result, gw)
    if name == "attack_bash_list_other_workspaces":
        assert "victim-ws" not in result.output
    if name == "attack_bash_find_whole_deployment":
        assert "attacker.json" in result.output  # the definitions are visible (read-only)…
        assert gw.victim_chat not in result.output  # …other users' chats are not


@pytest.mark.parametrize("command", [c for _, c, leaks in BASH_READS if leaks],
                         ids=[n for n, _, leaks in BASH_READS if leaks])
async def test_control_bash_read_leaks_without_the_sandbox(unsandboxed: Deployment,
                                                           command: str) -> None:
    """The same command on a gateway with ``sandbox.mode: off``: the detector sees the leak."""
    result = await attack(unsandboxed, "_bash_", _bash_read(unsandboxed, command))
    with pytest.raises(AssertionError, match="leaked"):
        assert_no_leak(result, unsandboxed)


BASH_WRITES = [
    ("attack_bash_overwrite_other_users_chat", "echo hacked > {root}/chats/{victim}.json", "chats/{victim}.json"),
    ("attack_bash_write_agent_goes_live", "echo '{{}}' > {root}/agents/evil.json", "agents/evil.json"),
    ("attack_bash_write_tool_definition", "echo '{{}}' > {root}/tools/evil.backend", "tools/evil.backend"),
    ("attack_bash_overwrite_application_yml", "echo 'x: 1' > {root}/application.yml", "application.yml"),
    ("attack_bash_write_into_skill_folder", "touch {root}/skills/math_basic/pwned", "skills/math_basic/pwned"),
    ("attack_bash_write_other_workspace", "echo x > {root}/data/.agw/workspaces/victim-ws/secret.txt",
     "data/.agw/workspaces/victim-ws/secret.txt"),
]


@pytest.mark.parametrize(("name", "command", "target"), BASH_WRITES, ids=[n for n, _, _ in BASH_WRITES])
async def test_bash_cannot_write_gateway_state(gw: Deployment,
                                                name: str, command: str, target: str) -> None:
    path = Path(gw.path(target.format(victim=gw.victim_chat)))
    before = path.read_bytes() if path.exists() else None
    result = await attack(gw, "_bash_", bash(command.format(victim=gw.victim_chat, root=gw.root)))
    assert result.result["exitCode"] != 0, result.result
    assert (path.read_bytes() if path.exists() else None) == before
    assert_no_leak(result, gw)
    async with httpx.AsyncClient() as client:
        agents = (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]
    assert "evil" not in {a["key"] for a in agents}


async def test_attack_bash_symlink_in_workspace_pointing_at_other_chat(
    gw: Deployment
) -> None:
    victim = gw.path(f"chats/{gw.victim_chat}.json")
    result = await attack(gw, "_bash_", bash(f"ln -sf {victim} stolen && cat stolen"))
    assert_no_leak(result, gw)
    # the link stays in the workspace; a later call in the same chat still cannot follow it
    chat_id = result.events[0]["chatId"]
    again = await attack(gw, "_bash_", bash("cat stolen"), chat_id=chat_id)
    assert again.result["exitCode"] != 0
    assert_no_leak(again, gw)


async def test_attack_bash_hard_link_to_other_chat(gw: Deployment) -> None:
    victim = gw.path(f"chats/{gw.victim_chat}.json")
    result = await attack(gw, "_bash_", bash(f"ln {victim} hard && cat hard"))
    assert result.result["exitCode"] != 0
    assert_no_leak(result, gw)


async def test_attack_bash_curl_gateway_own_port(gw: Deployment) -> None:
    result = await attack(gw, "_bash_", bash(f"curl -sS --max-time 3 {gw.url}/api/ap/chats"))
    assert result.result["exitCode"] != 0
    assert gw.victim_chat not in result.output
    assert_no_leak(result, gw)


# -- exec-capable forms: refused by the policy before anything runs ---------------------------

EXEC_FORMS = [
    ("attack_find_exec", "find . -exec cat '{{}}' ';'"),
    ("attack_find_execdir", "find . -execdir cat '{{}}' +"),
    ("attack_find_fprintf", "find . -fprintf out.txt %p"),
    ("attack_sed_e_command", "sed e notes.txt"),
    ("attack_sed_w_command", "sed -n w/tmp/x notes.txt"),
    ("attack_awk_system", "awk 'BEGIN{{system(\"id\")}}'"),
    ("attack_tar_checkpoint_action", "tar -cf x.tar --checkpoint=1 --checkpoint-action=exec=id ."),
    ("attack_tar_to_command", "tar -xf x.tar --to-command=id"),
    ("attack_tar_use_compress_program", "tar -I id -cf x.tar ."),
    ("attack_xargs", "xargs id"),
    ("attack_env_wraps_command", "env id"),
    ("attack_timeout_wraps_command", "timeout 5 id"),
    ("attack_nice_wraps_command", "nice id"),
    ("attack_nohup_wraps_command", "nohup id"),
    ("attack_stdbuf_wraps_command", "stdbuf -o0 id"),
    ("attack_dd", "dd if=application.yml of=copy"),
    ("attack_zip_TT", "zip -T -TT id x.zip notes.txt"),
    ("attack_python_c", "python3 -c 'print(1)'"),
    ("attack_bash_c", "bash -c id"),
    ("attack_curl_file_url", "curl file:///etc/passwd"),
    ("attack_perl_e", "perl -e 'print 1'"),
]


@pytest.mark.parametrize(("name", "command"), EXEC_FORMS, ids=[n for n, _ in EXEC_FORMS])
async def test_exec_capable_forms_are_refused(gw: Deployment,
                                              name: str, command: str) -> None:
    result = await attack(gw, "_bash_", bash(command.format()))
    assert "exec-capable" in orjson.dumps(result.result).decode(), result.result
    assert_no_leak(result, gw)


# -- _skill_run_script_: no command policy at all; the sandbox is the only boundary -------------

PY_READS = [
    ("attack_python_read_proc_ppid_environ", "print(open(f'/proc/{{os.getppid()}}/environ').read())", False),
    ("attack_python_read_proc_1_environ", "print(open('/proc/1/environ').read())", False),
    ("attack_python_read_every_proc_environ",
     "import glob\nfor p in glob.glob('/proc/[0-9]*/environ'):\n    try:\n        print(p, open(p).read())\n"
     "    except OSError:\n        pass", True),
    ("attack_python_dump_own_environment", "print(dict(os.environ))", False),
    ("attack_python_read_gateway_pid_environ", "print(open('/proc/{gateway_pid}/environ').read())", True),
    ("attack_python_read_application_yml", "print(open('{root}/application.yml').read())", True),
    ("attack_python_read_other_users_chat", "print(open('{root}/chats/{victim}.json').read())", True),
    ("attack_python_walk_deployment",
     "for d, _, fs in os.walk('{root}'):\n    for f in fs:\n        print(d, f, open(os.path.join(d, f), 'rb').read())",
     True),
    ("attack_python_read_credentials", "print(open('{root}/data/.agw/credentials.json').read())", True),
    ("attack_python_read_other_workspace", "print(open('{root}/data/.agw/workspaces/victim-ws/secret.txt').read())",
     True),
    ("attack_python_read_etc_passwd", "print(open('/etc/passwd').read())", True),
    ("attack_python_read_outside_file", "print(open('{outside}').read())", True),
    ("attack_python_symlink_out_of_workspace",
     "os.symlink('{root}/chats/{victim}.json', 'l')\nprint(open('l').read())", True),
    ("attack_python_hard_link_out_of_workspace",
     "os.link('{root}/chats/{victim}.json', 'h')\nprint(open('h').read())", True),
    ("attack_python_proc_root_of_pid_1", "print(os.listdir('/proc/1/root{root}/chats'))", False),
    ("attack_python_dev_mem", "print(open('/dev/mem','rb').read(16))", False),
]


def _code(gw: Deployment, template: str) -> str:
    return "import os\n" + template.format(root=gw.root, victim=gw.victim_chat, outside=gw.outside,
                                           gateway_pid=gw.pid)


@pytest.mark.parametrize(("name", "code", "leaks"), PY_READS, ids=[n for n, _, _ in PY_READS])
async def test_python_cannot_read_gateway_state(gw: Deployment,
                                                 name: str, code: str, leaks: bool) -> None:
    result = await attack(gw, "_skill_run_script_", py(_code(gw, code)))
    assert "exitCode" in result.result, result.result
    assert_no_leak(result, gw)


@pytest.mark.parametrize("code", [c for _, c, leaks in PY_READS if leaks],
                         ids=[n for n, _, leaks in PY_READS if leaks])
async def test_control_python_read_leaks_without_the_sandbox(unsandboxed: Deployment,
                                                             code: str) -> None:
    result = await attack(unsandboxed, "_skill_run_script_", py(_code(unsandboxed, code)))
    with pytest.raises(AssertionError, match="leaked"):
        assert_no_leak(result, unsandboxed)


#: (name, code, target, changes the file without the sandbox?)
PY_WRITES = [
    ("attack_python_write_agent_file", "open('{root}/agents/evil.json', 'w').write('{{}}')", "agents/evil.json", True),
    ("attack_python_overwrite_other_chat", "open('{root}/chats/{victim}.json', 'w').write('x')",
     "chats/{victim}.json", False),
    ("attack_python_write_into_own_skill_folder", "open('{root}/skills/math_basic/pwned', 'w').write('x')",
     "skills/math_basic/pwned", True),
    ("attack_python_write_model_definition", "open('{root}/models/evil.json', 'w').write('{{}}')",
     "models/evil.json", True),
    ("attack_python_replace_credentials", "open('{root}/data/.agw/credentials.json', 'w').write('x')",
     "data/.agw/credentials.json", False),
]


def _snapshot(deployment: Deployment, target: str) -> bytes | None:
    path = Path(deployment.path(target.format(victim=deployment.victim_chat)))
    return path.read_bytes() if path.exists() else None


@pytest.mark.parametrize(("name", "code", "target", "writes"), PY_WRITES, ids=[n for n, *_ in PY_WRITES])
async def test_python_cannot_write_gateway_state(gw: Deployment, name: str, code: str, target: str,
                                                  writes: bool) -> None:
    before = _snapshot(gw, target)
    result = await attack(gw, "_skill_run_script_", py(_code(gw, code)))
    # (under /tmp the write may land in the sandbox's private /tmp; elsewhere it is EROFS/ENOENT)
    assert "exitCode" in result.result, result.result
    assert _snapshot(gw, target) == before
    assert_no_leak(result, gw)


@pytest.mark.parametrize(("code", "target"), [(c, t) for _, c, t, w in PY_WRITES if w],
                         ids=[n for n, _, _, w in PY_WRITES if w])
async def test_control_python_write_lands_without_the_sandbox(unsandboxed: Deployment, code: str,
                                                              target: str) -> None:
    before = _snapshot(unsandboxed, target)
    await attack(unsandboxed, "_skill_run_script_", py(_code(unsandboxed, code)))
    assert _snapshot(unsandboxed, target) != before


async def test_attack_skill_script_writes_into_its_own_folder(gw: Deployment) -> None:
    result = await attack(gw, "_skill_run_script_", {"skill": "evil", "script": "scripts/write_self.sh"})
    assert "Read-only file system" in result.output
    assert not (gw.root / "skills" / "evil" / "scripts" / "pwned.txt").exists()


async def test_attack_python_signals_the_gateway(gw: Deployment) -> None:
    # signal 0 only probes: were the sandbox broken, nothing would be harmed
    code = f"import os\ntry:\n    os.kill({gw.pid}, 0)\n    print('REACHED')\nexcept ProcessLookupError:\n    print('no such process')"
    result = await attack(gw, "_skill_run_script_", py(code))
    assert result.result["stdout"].strip() == "no such process"


@pytest.mark.parametrize("target", ["gateway", "upstream"])
async def test_attack_python_connects_to_gateway_port(gw: Deployment,
                                                      target: str) -> None:
    port = gw.port if target == "gateway" else int(gw.upstream.url.rsplit(":", 1)[1])
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n    print('CONNECTED')\n"
            "except OSError as exc:\n    print('refused', exc.errno)")
    result = await attack(gw, "_skill_run_script_", py(code))
    assert result.result["stdout"].startswith("refused"), result.result


async def test_attack_python_memory_bomb_is_capped(gw: Deployment) -> None:
    result = await attack(gw, "_skill_run_script_", py("x = bytearray(1024 * 1024 * 1024)\nprint('ALLOCATED')"))
    assert "MemoryError" in result.result["stderr"] and "ALLOCATED" not in result.result["stdout"]


async def test_attack_python_cpu_spin_is_killed(gw: Deployment) -> None:
    result = await attack(gw, "_skill_run_script_", py("while True:\n    pass"))
    assert result.result["exitCode"] != 0 and not result.result["timedOut"]  # RLIMIT_CPU, not the wall clock


async def test_attack_output_flood_is_capped(gw: Deployment) -> None:
    result = await attack(gw, "_skill_run_script_", py("import sys\nsys.stdout.write('x' * 5_000_000)"))
    assert result.result["truncated"] is True and len(result.result["stdout"]) == 65536


def _host_processes(marker: str) -> list[int]:
    """PIDs of host processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode("utf-8", "replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _daemon_code(seconds: str) -> str:
    return ("import subprocess\n"
            f"subprocess.Popen(['sleep', '{seconds}'], start_new_session=True, stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL)\nprint('spawned')")


async def test_attack_daemonised_child_outlives_the_call(gw: Deployment) -> None:
    result = await attack(gw, "_skill_run_script_", py(_daemon_code("31.4159")))
    assert result.result["stdout"].strip() == "spawned"
    # the PID namespace dies with the call: the orphan is killed with it (bounded wait, no timing assertion)
    deadline = time.monotonic() + 10
    while _host_processes("31.4159") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _host_processes("31.4159")


async def test_control_daemonised_child_survives_without_the_sandbox(unsandboxed: Deployment) -> None:
    result = await attack(unsandboxed, "_skill_run_script_", py(_daemon_code("27.1828")))
    assert result.result["stdout"].strip() == "spawned"
    survivors = _host_processes("27.1828")
    try:
        assert survivors
    finally:
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)


# -- what a tool CAN do: its own workspace, per chat ---------------------------------------------


async def test_workspace_persists_within_a_chat_and_is_private_to_it(gw: Deployment) -> None:
    first = await attack(gw, "_bash_", bash("echo kept > note.txt && pwd"))
    chat_id = first.events[0]["chatId"]
    workspace = (gw.root / "data" / ".agw" / "workspaces" / chat_id).resolve()
    assert first.result["stdout"].strip() == str(workspace)
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    again = await attack(gw, "_bash_", bash("cat note.txt"), chat_id=chat_id)
    assert again.result["stdout"] == "kept\n"
    other = await attack(gw, "_bash_", bash("cat note.txt"))
    assert other.result["exitCode"] != 0 and "kept" not in other.output


async def test_definitions_stay_readable_through_allowed_paths(gw: Deployment) -> None:
    result = await attack(gw, "_bash_", bash(f"cat {gw.root}/agents/attacker.json"))
    assert result.result["exitCode"] == 0 and '"attacker"' in result.result["stdout"]


# -- fail closed -----------------------------------------------------------------------------------


def _fail_closed_gateway(tmp_path: Path, upstream: FakeUpstream, bwrap_path: str) -> GatewayServer:
    root = make_deployment(tmp_path / "deploy", upstream.url, yaml_extra=(
        "  tools:\n    bash:\n      allowed-commands: touch,ls\n"
        f"    sandbox:\n      bwrap-path: {bwrap_path}\n"
    ))
    write_agent(root, "attacker", agent("REACT", tools=TOOLS, skillConfig={"skills": ["math_basic"]}))
    return GatewayServer(root).start()


@pytest.mark.parametrize("cause", ["missing", "no_namespaces"])
async def test_fail_closed_when_the_sandbox_is_unavailable(tmp_path: Path, shared_upstream: FakeUpstream,
                                                           cause: str) -> None:
    if cause == "missing":
        bwrap_path, expected = str(tmp_path / "no-such-bwrap"), "is not installed"
    else:  # what bwrap prints on a kernel without unprivileged user namespaces
        fake = tmp_path / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        bwrap_path, expected = str(fake), "cannot create its namespaces (bwrap: No permissions to creating new"
    server = _fail_closed_gateway(tmp_path, shared_upstream, bwrap_path)
    try:
        deployment = InThreadDeployment(server, shared_upstream)
        for tool, args in (("_bash_", bash("touch PWNED")), ("_skill_run_script_", py("open('PWNED','w')"))):
            result = await attack(deployment, tool, args)  # type: ignore[arg-type]
            assert "the tool sandbox is unavailable" in result.result["error"] and expected in result.result["error"]
        assert not list(server.settings.base_dir.rglob("PWNED"))
    finally:
        server.stop()


class InThreadDeployment:
    """The part of ``Deployment`` that ``attack`` uses, for a gateway run in this process."""

    def __init__(self, server: GatewayServer, upstream: FakeUpstream) -> None:
        self.root = server.settings.base_dir
        self.upstream = upstream
        self.url = server.url

    def log_size(self) -> int:
        return 0


# -- the repository's own demo configuration ----------------------------------------------------


def test_demo_application_yml_is_safe_by_default(tmp_path: Path) -> None:
    """The shipped ``application.yml`` sandboxes tools and exposes no gateway state to them."""
    from app.config import load_settings
    from app.tools.bash import allowed_roots
    from app.tools.sandbox import Sandbox

    shutil.copy(REPO / "application.yml", tmp_path / "application.yml")
    settings = load_settings(tmp_path, files=(Path("application.yml"),), env={})
    assert settings.agent.tools.sandbox.mode == "bwrap"
    assert settings.agent.tools.sandbox.network is False
    state = [settings.chats_dir, settings.state_dir, tmp_path / "application.yml", settings.agents_dir]
    for root in allowed_roots(settings, settings.base_dir):
        assert not any(path == root or root in path.parents for path in state), root
    sandbox = Sandbox(settings)
    args = sandbox.bwrap_args("bwrap", sandbox.workspace_for("chat_demo"))
    bound = {args[i + 2] for i, arg in enumerate(args) if arg in ("--bind", "--ro-bind")}
    assert not any(str(tmp_path) == b or str(tmp_path).startswith(b + "/") for b in bound), bound
