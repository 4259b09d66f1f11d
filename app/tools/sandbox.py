"""The tool sandbox: every tool that starts a process runs inside bubblewrap (SPEC §14).

``Sandbox`` is built once per gateway (``Gateway`` → ``RunServices`` → ``ToolContext``)
and runs one argv per call inside a fresh ``bwrap`` container:

* own user, PID, IPC, UTS, cgroup and network namespaces (``--unshare-all``; the network
  is shared only with ``agent.tools.sandbox.network: true``), ``--die-with-parent``,
  ``--new-session``, all capabilities dropped;
* the system's program folders read-only (``/usr`` and the ``/bin``, ``/lib*``, ``/sbin``
  links or folders), a minimal ``/etc``, a fresh ``/proc`` (only the sandbox's own
  processes; ``/proc/sys`` read-only), a minimal ``/dev``, a private ``/tmp``;
* the gateway's Python installation read-only (``_skill_run_script_`` runs with it);
* ``agent.tools.bash.allowed-paths`` and, for script tools, the skill's folder read-only;
* the gateway's own state **hidden** even when one of those contains it: the chats folder,
  ``data/.agw`` (credentials, schedules, every workspace), the workspaces folder, the browser's
  screenshots (``data/screenshots``, every chat's pages),
  ``application.yml`` files, the credential master-secret file (an empty ``tmpfs`` over a
  folder, ``/dev/null`` over a file);
* the chat's private workspace (``workspace-dir/<chatId>``) read-write, as the working
  directory and ``HOME``;
* an environment of ``PATH``, ``HOME``, ``LANG`` plus the ``env-passthrough`` names only;
* limits per call: address space (``memory-mb``), CPU seconds, output bytes, wall time; the
  writable in-memory folders ``/tmp`` and ``/dev/shm`` hold at most ``memory-mb`` each, and the
  rest of ``/dev`` is read-only.

Fail closed: when ``bwrap`` is missing or cannot create its namespaces, ``run`` raises
``ToolError`` naming the cause and nothing runs. ``mode: off`` runs the process directly
(the pre-sandbox behaviour: minimal environment, no isolation) and logs a WARNING each time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.errors import PathEscapeError, ToolError
from app.paths import check_key
from app.tools._process import ProcessResult, minimal_env, run_process
from app.tools.interpreter import python_prefixes

logger = logging.getLogger(__name__)

#: PATH inside the sandbox (the host's PATH may name folders the sandbox does not have)
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: top-level links or folders of the system (merged-/usr systems link them into /usr)
_SYSTEM_ROOTS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: the part of /etc that programs need to start, find libraries, time zones and (with network) hosts;
#: never all of /etc/ssl (its private/ holds the host's TLS keys)
_ETC_FILES = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
    "/etc/timezone", "/etc/nsswitch.conf", "/etc/mime.types", "/etc/protocols", "/etc/services",
    "/etc/ssl/certs", "/etc/ssl/openssl.cnf", "/etc/ca-certificates", "/etc/python3", "/etc/fonts",
)  # fmt: skip
_NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf")
#: never bind these (or a folder above them) from ``allowed-paths``: the sandbox's own
#: /proc, /dev and /sys would be replaced by the host's
_FORBIDDEN_ALLOWED = (Path("/"), Path("/proc"), Path("/sys"), Path("/dev"), Path("/run"))
#: largest file a sandboxed process may write (RLIMIT_FSIZE), bytes
MAX_FILE_BYTES = 256 * 1024 * 1024
_PROBE_ARGV = ("/bin/true",)


@dataclass(frozen=True, slots=True)
class Mount:
    """One extra bind into the sandbox: ``source`` (host) appears read-only at ``target``."""

    source: Path
    target: Path


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class Sandbox:
    """Runs process tools in bubblewrap (or, with ``mode: off``, directly). See the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.agent.tools.sandbox
        #: set once a probe container started; a failed probe is retried on the next call
        self._verified = False

    # -- what the gateway must hide

    def hidden_paths(self) -> list[Path]:
        """The gateway's own state: never visible inside the sandbox (SPEC §14)."""
        settings = self.settings
        paths = [
            settings.chats_dir,
            settings.state_dir,
            settings.workspaces_dir,
            settings.screenshots_dir,
            settings.base_dir / "application.yml",
            Path("/opt/application.yml"),
            settings.resolve(settings.credentials.file),
        ]
        if settings.credentials.master_secret_file:
            paths.append(settings.resolve(settings.credentials.master_secret_file))
        return [p.resolve() for p in paths]

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    # -- workspaces

    def workspace_for(self, chat_id: str) -> Path:
        """The chat's private, writable folder (created on first use)."""
        try:
            key = check_key(chat_id, "chat id")
        except PathEscapeError as exc:
            raise ToolError(exc.message) from exc
        root = self.settings.workspaces_dir
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        workspace = root / key
        workspace.mkdir(exist_ok=True, mode=0o700)
        resolved = workspace.resolve()
        if resolved.parent != root.resolve():
            raise ToolError(f"the workspace of chat {chat_id!r} is not a plain folder")
        return resolved

    # -- running

    def environment(self, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": SANDBOX_PATH, "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
        for name in self.config.env_passthrough:
            if name in os.environ and name not in env:
                env[name] = os.environ[name]
        if extra:
            env.update(extra)
        return env

    async def run(
        self,
        argv: Sequence[str],
        *,
        workspace: Path,
        timeout_s: float,
        read_only: Sequence[Path] = (),
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        cwd_off: Path | None = None,
    ) -> ProcessResult:
        """Run ``argv`` in the sandbox with ``workspace`` as working directory.

        ``read_only`` folders are bound at their own path (allowed paths, the skill folder);
        ``mounts`` bind single files elsewhere. ``cwd_off`` is the working directory used
        with ``mode: off`` (default: the workspace).
        """
        max_output = self.config.max_output_bytes
        limits = self._limits()
        if not self.enabled:
            logger.warning("tool sandbox is OFF (agent.tools.sandbox.mode: off): %s runs unconfined", argv[0])
            off_env = minimal_env(dict(env) if env else None)
            return self._explained(await run_process(
                argv, cwd=cwd_off or workspace, timeout_s=timeout_s, env=off_env,
                max_output_bytes=max_output, preexec_fn=limits,
            ))
        bwrap = self._bwrap()
        if not self._verified:
            await self._probe(bwrap)
        wrapped = [*self.bwrap_args(bwrap, workspace, read_only, mounts), "--", *argv]
        sandbox_env = self.environment(workspace, env)
        result = await run_process(
            wrapped, cwd=workspace, timeout_s=timeout_s, env=sandbox_env,
            max_output_bytes=max_output, preexec_fn=limits,
        )
        return self._explained(result)

    def bwrap_args(
        self, bwrap: str, workspace: Path, read_only: Sequence[Path] = (), mounts: Sequence[Mount] = ()
    ) -> list[str]:
        """The bubblewrap command line (without the ``-- argv`` tail)."""
        args = [bwrap, "--unshare-all"]
        if self.config.network:
            args.append("--share-net")
        args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
        args += ["--ro-bind", "/usr", "/usr"]
        for root in _SYSTEM_ROOTS:
            path = Path(root)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), root]
            elif path.is_dir():
                args += ["--ro-bind", root, root]
        etc = list(_ETC_FILES) + (list(_NETWORK_ETC) if self.config.network else [])
        for item in etc:
            args += ["--ro-bind-try", item, item]
        args += ["--size", str(self._tmpfs_bytes()), "--tmpfs", "/tmp", "--dir", "/run"]
        bound: list[Path] = [Path("/usr")]
        for prefix in self._python_prefixes():
            if any(_inside(forbidden, prefix) for forbidden in _FORBIDDEN_ALLOWED):
                continue  # a Python installed at / lives in /usr, already bound
            if not _inside(prefix, Path("/usr")):
                args += ["--ro-bind", str(prefix), str(prefix)]
                bound.append(prefix)
        hidden_paths = self.hidden_paths()
        for folder in read_only:
            resolved = folder.resolve()
            if any(_inside(forbidden, resolved) for forbidden in _FORBIDDEN_ALLOWED):
                raise ToolError(
                    f"allowed path {str(folder)!r} would expose the host's root, /proc, /sys, /dev or /run "
                    "to a sandboxed tool; list narrower folders in agent.tools.bash.allowed-paths"
                )
            if any(_inside(resolved, hidden) for hidden in hidden_paths):
                logger.warning("allowed path %s is inside the gateway's state and is not exposed to tools", folder)
                continue
            if resolved.exists():
                args += ["--ro-bind", str(resolved), str(resolved)]
                bound.append(resolved)
        masked: list[str] = []
        for hidden in hidden_paths:
            if not any(_inside(hidden, root) for root in bound) or not hidden.exists():
                continue
            if any(other != hidden and _inside(hidden, other) and other.is_dir() for other in hidden_paths):
                continue  # already under an emptied folder
            if hidden.is_dir():
                args += ["--tmpfs", str(hidden)]
                masked.append(str(hidden))
            else:
                args += ["--ro-bind", "/dev/null", str(hidden)]
        args += ["--bind", str(workspace), str(workspace)]
        for mount in mounts:
            args += ["--ro-bind", str(mount.source), str(mount.target)]
        for masked_folder in masked:  # after the workspace's mount point was made inside it
            args += ["--remount-ro", masked_folder]
        # bwrap's /dev is a writable tmpfs as large as the host allows: only /dev/shm stays writable
        # (POSIX semaphores and shared memory), capped like /tmp
        # bwrap covers /proc/sys only when access(W_OK) on the folder succeeds, which it never does
        # (sysctl folders answer EACCES), and a gateway running as root runs tools as the host's
        # uid 0, all that sysctl files check: kernel.core_pattern would run a workspace file as
        # root on the host
        args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
                 "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger"]
        args += ["--dev", "/dev", "--size", str(self._tmpfs_bytes()), "--tmpfs", "/dev/shm",
                 "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", str(workspace)]
        return args

    # -- internals

    def _bwrap(self) -> str:
        configured = self.config.bwrap_path
        found = configured if os.path.isabs(configured) and os.access(configured, os.X_OK) else None
        found = found or (shutil.which(configured) if not os.path.isabs(configured) else None)
        if found is None:
            raise ToolError(
                f"the tool sandbox is unavailable: bubblewrap ({configured!r}) is not installed "
                "(install the 'bubblewrap' package; process tools are refused until then, "
                "see README 'Security model')"
            )
        return found

    async def _probe(self, bwrap: str) -> None:
        probe_dir = self.settings.workspaces_dir
        probe_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [*self.bwrap_args(bwrap, probe_dir.resolve()), "--", *_PROBE_ARGV]
        result = await run_process(argv, cwd=probe_dir, timeout_s=10.0, env=self.environment(probe_dir))
        if result.exit_code != 0:
            cause = (result.stderr.strip() or f"exit code {result.exit_code}").splitlines()[-1]
            logger.error("tool sandbox unavailable: %s", cause)
            raise ToolError(
                f"the tool sandbox is unavailable: bubblewrap cannot create its namespaces ({cause}); "
                "process tools are refused (a non-root host needs unprivileged user namespaces, "
                "see README 'Security model')"
            )
        self._verified = True

    def _python_prefixes(self) -> list[Path]:
        return python_prefixes()  # the one-file executable: the system python3's (app.tools.interpreter)

    def _tmpfs_bytes(self) -> int:
        """Size of each writable in-memory folder (``/tmp``, ``/dev/shm``): ``memory-mb``. Their files
        are the host's memory, which ``RLIMIT_AS`` does not count; unsized they could take half of it."""
        return self.config.memory_mb * 1024 * 1024

    def _explained(self, result: ProcessResult) -> ProcessResult:
        """``result`` with a line in ``stderr`` when the CPU limit ended it: the kernel's SIGXCPU
        leaves no message of its own, only an exit code (128 + 24 through bwrap, -24 directly)."""
        if result.timed_out or result.exit_code not in (128 + signal.SIGXCPU, -signal.SIGXCPU):
            return result
        note = (f"[killed: exit code {result.exit_code} is SIGXCPU, the CPU time limit of "
                f"{self.config.cpu_seconds} s (agent.tools.sandbox.cpu-seconds) was used up]")
        return dataclasses.replace(result, stderr=f"{result.stderr.rstrip(chr(10))}\n{note}".lstrip("\n"))

    def _limits(self) -> Callable[[], None]:
        memory = self.config.memory_mb * 1024 * 1024
        cpu = self.config.cpu_seconds

        def apply() -> None:  # runs in the child between fork and exec
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            # the soft limit sends SIGXCPU (which ``_explained`` can name); SIGKILL a second later
            # for a process that ignores it
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        return apply
