"""Encrypted credentials (SPEC §12): the store, the ``agw credentials`` CLI as a subprocess, and a
provider ``api-key-ref`` used in a real request to the fake upstream."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from app.config import load_settings
from app.credentials import CredentialError, CredentialStore, master_secret, provider_api_keys
from app.credentials.store import KdfParams, editing
from app.devtools import FakeUpstream
from app.devtools.script import text_script
from app.gateway import Gateway
from tests.support.deployment import REPO, agent, make_deployment, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

#: cheap scrypt for unit tests (the file records its own parameters)
FAST = KdfParams(n=2**10)


def _store(tmp_path: Path, secret: str = "correct horse") -> CredentialStore:
    store = CredentialStore.create(tmp_path / "credentials.json", secret, FAST)
    store.set("openai", "sk-live-abc")
    store.set("anthropic", "sk-ant-xyz")
    store.save()
    return store


def test_round_trip_and_file_format(tmp_path: Path) -> None:
    _store(tmp_path)
    opened = CredentialStore.open(tmp_path / "credentials.json", "correct horse")
    assert opened.names() == ["anthropic", "openai"]
    assert opened.get("openai") == "sk-live-abc" and opened.get("anthropic") == "sk-ant-xyz"
    raw = (tmp_path / "credentials.json").read_bytes()
    assert b"sk-live-abc" not in raw and b"sk-ant-xyz" not in raw
    data = orjson.loads(raw)
    assert data["version"] == 1 and data["kdf"]["name"] == "scrypt" and len(base64.b64decode(data["salt"])) == 16
    assert set(data["entries"]["openai"]) == {"nonce", "ciphertext"}
    assert (tmp_path / "credentials.json").stat().st_mode & 0o077 == 0
    assert opened.delete("openai") and not opened.delete("openai")
    opened.save()
    assert CredentialStore.open(tmp_path / "credentials.json", "correct horse").names() == ["anthropic"]


def test_wrong_master_secret_is_a_clear_error(tmp_path: Path) -> None:
    _store(tmp_path)
    with pytest.raises(CredentialError, match="wrong master secret"):
        CredentialStore.open(tmp_path / "credentials.json", "battery staple")


def test_tampered_ciphertext_is_refused(tmp_path: Path) -> None:
    _store(tmp_path)
    path = tmp_path / "credentials.json"
    data = orjson.loads(path.read_bytes())
    blob = bytearray(base64.b64decode(data["entries"]["openai"]["ciphertext"]))
    blob[0] ^= 0x01
    data["entries"]["openai"]["ciphertext"] = base64.b64encode(bytes(blob)).decode()
    # a ciphertext moved to another name does not open either (the name is authenticated)
    data["entries"]["copied"] = data["entries"]["anthropic"]
    path.write_bytes(orjson.dumps(data))
    store = CredentialStore.open(path, "correct horse")
    with pytest.raises(CredentialError, match="tampered"):
        store.get("openai")
    with pytest.raises(CredentialError, match="tampered"):
        store.get("copied")
    assert store.get("anthropic") == "sk-ant-xyz"
    with pytest.raises(CredentialError, match="no credential named"):
        store.get("missing")


@pytest.mark.parametrize("kdf", [
    {"n": 3}, {"n": 0}, {"n": -2}, {"r": 0}, {"p": 0}, {"p": 10_000}, {"n": True}, {"r": 1.5}, {"n": "1024"},
    {"n": 2**40},  # 128 TiB: a corrupted file must not make the gateway try to allocate it
])
def test_corrupt_kdf_parameters_are_a_clear_error_not_a_crash(tmp_path: Path, kdf: dict[str, object]) -> None:
    _store(tmp_path)
    path = tmp_path / "credentials.json"
    data = orjson.loads(path.read_bytes())
    data["kdf"].update(kdf)
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(CredentialError, match="kdf parameters"):
        CredentialStore.open(path, "correct horse")


def test_invalid_names_are_refused(tmp_path: Path) -> None:
    store = CredentialStore.create(tmp_path / "c.json", "s", FAST)
    for name in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(CredentialError, match="invalid credential name"):
            store.set(name, "v")


# -- the CLI, as a real subprocess --------------------------------------------------------


def _agw(deploy: Path, *args: str, secret: str | None = "cli secret", stdin: str | None = None,
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGW_MASTER_SECRET"}
    if secret is not None:
        env["AGW_MASTER_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "app", "credentials", *args, "--dir", str(deploy)],
        input=stdin, capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120, check=False,
    )


def test_cli_set_list_delete(tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    assert _agw(deploy, "set", "from_stdin", stdin="sk-from-stdin\n").returncode == 0
    assert _agw(deploy, "set", "from_flag", "--value", "sk-from-flag").returncode == 0
    listed = _agw(deploy, "list")
    assert listed.returncode == 0 and listed.stdout.split() == ["from_flag", "from_stdin"]
    assert "sk-from" not in listed.stdout + listed.stderr
    store = CredentialStore.open(deploy / "data" / ".agw" / "credentials.json", "cli secret")
    assert store.get("from_stdin") == "sk-from-stdin" and store.get("from_flag") == "sk-from-flag"

    wrong = _agw(deploy, "list", secret="not it")
    assert wrong.returncode == 1 and "wrong master secret" in wrong.stderr
    none = _agw(deploy, "list", secret=None)
    assert none.returncode == 1 and "AGW_MASTER_SECRET" in none.stderr
    assert _agw(deploy, "delete", "from_flag").returncode == 0
    gone = _agw(deploy, "delete", "from_flag")
    assert gone.returncode == 1 and "no credential named" in gone.stderr
    assert _agw(deploy, "list").stdout.split() == ["from_stdin"]
    bad = _agw(deploy, "set", "../escape", "--value", "x")
    assert bad.returncode == 1 and "invalid credential name" in bad.stderr
    corrupt = orjson.loads(store.path.read_bytes())
    corrupt["kdf"]["n"] = 3
    store.path.write_bytes(orjson.dumps(corrupt))
    broken = _agw(deploy, "list")
    assert broken.returncode == 1 and "kdf parameters" in broken.stderr and "Traceback" not in broken.stderr


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on a file lock (a ``->`` line of ``/proc/locks``)."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines() if len(line.split()) > 5)


def test_a_cli_set_while_another_change_is_under_way_keeps_both_entries(tmp_path: Path) -> None:
    """Two changes at once (two ``agw credentials set``, or a script beside the CLI) used to read
    the same file and rename over each other: both said "stored", one entry was gone."""
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    path = deploy / "data" / ".agw" / "credentials.json"
    with editing(path, "cli secret", create=True) as first:  # the store the CLI finds
        first.set("first", "v1")
        first.save()
    env = {**os.environ, "AGW_MASTER_SECRET": "cli secret"}
    with editing(path, "cli secret", create=False) as store:  # a change under way: the file is read
        cli = subprocess.Popen([sys.executable, "-m", "app", "credentials", "set", "second", "--value", "v2",
                                "--dir", str(deploy)], cwd=str(REPO), env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3000):  # until the CLI has finished (the old race) or waits for the lock
            if cli.poll() is not None or _waits_for_a_lock(cli.pid):
                break
            time.sleep(0.01)
        store.set("mine", "v3")
        store.save()
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 0, stderr
    assert CredentialStore.open(path, "cli secret").names() == ["first", "mine", "second"]


def test_a_master_secret_of_random_bytes_works_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """``head -c 32 /dev/urandom > master.secret`` is the obvious way to make a secret; reading it as
    UTF-8 text ended every command with a UnicodeDecodeError traceback (naming a byte of the secret)."""
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    secret = b"\xaa\x01 random\xff\xfe bytes\x80"
    (deploy / "master.secret").write_bytes(secret + b"\n")
    (deploy / "application.yml").write_text("credentials:\n  master-secret-file: master.secret\n", encoding="utf-8")
    stored = _agw(deploy, "set", "vault_key", "--value", "sk-binary", secret=None)
    assert stored.returncode == 0 and "Traceback" not in stored.stderr, stored.stderr
    settings = load_settings(deploy, files=(Path("application.yml"),), env={})
    path = deploy / "data" / ".agw" / "credentials.json"
    assert CredentialStore.open(path, master_secret(settings.credentials, deploy, env={})).get("vault_key") == "sk-binary"
    # the same bytes in the environment (Python hands them over as surrogate escapes) open it too
    as_env = os.fsdecode(secret)
    assert CredentialStore.open(path, master_secret(settings.credentials, deploy, env={"AGW_MASTER_SECRET": as_env})
                                ).get("vault_key") == "sk-binary"


# -- provider api-key-ref -----------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _vault_deployment(root: Path, upstream: FakeUpstream, ref: str = "vault_key") -> Path:
    deploy = make_deployment(root, upstream.url, yaml_extra=(
        f"    vault:\n      base-url: {upstream.url}\n      api-key-ref: {ref}\n"
        "credentials:\n  master-secret-file: master.secret\n  master-secret-env: AGW_TEST_UNSET_SECRET\n"
    ))
    (deploy / "master.secret").write_text("deploy secret\n", encoding="utf-8")
    store = CredentialStore.create(deploy / "data" / ".agw" / "credentials.json", "deploy secret", FAST)
    store.set("vault_key", "sk-from-the-vault")
    store.save()
    (deploy / "models" / "vault-model.json").write_bytes(orjson.dumps(
        {"key": "vault-model", "provider": "vault", "protocol": "OPENAI", "modelId": "vault-gpt"}))
    write_agent(deploy, "vaulted", agent("ONESHOT", model="vault-model"))
    return deploy


async def test_provider_api_key_ref_is_sent_upstream(tmp_path: Path, upstream: FakeUpstream) -> None:
    deploy = _vault_deployment(tmp_path / "deploy", upstream)
    upstream.enqueue(text_script(["hi"]))
    with GatewayServer(deploy) as gw:
        async with httpx.AsyncClient(timeout=30) as client:
            events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "vaulted", "message": "x"})
            detail = (await client.get(f"{gw.url}/api/ap/agent", params={"agentKey": "vaulted"})).text
    assert events[-1]["type"] == "run.complete"
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-from-the-vault"
    assert "sk-from-the-vault" not in detail


def test_wrong_master_secret_or_missing_entry_stops_startup(tmp_path: Path, upstream: FakeUpstream) -> None:
    deploy = _vault_deployment(tmp_path / "deploy", upstream)
    (deploy / "master.secret").write_text("not the secret", encoding="utf-8")
    settings = load_settings(deploy, files=(Path("application.yml"),), env={})
    with pytest.raises(CredentialError, match="wrong master secret"):
        Gateway(settings)

    other = _vault_deployment(tmp_path / "other", upstream, ref="absent_key")
    settings = load_settings(other, files=(Path("application.yml"),), env={})
    with pytest.raises(CredentialError, match="'absent_key' is not in the credential store"):
        provider_api_keys(settings)


def test_agw_serve_with_a_wrong_master_secret_exits_with_a_clear_message(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    deploy = _vault_deployment(tmp_path / "deploy", upstream)
    (deploy / "master.secret").write_text("not the secret", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SERVER_", "AGW_"))}
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--dir", str(deploy)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "configuration error" in done.stderr and "wrong master secret" in done.stderr
    assert "Traceback" not in done.stderr
