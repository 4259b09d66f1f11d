"""Configuration (SPEC §2).

Sources, lowest priority first: built-in defaults → ``./application.yml`` →
``/opt/application.yml`` → environment variables. ``${ENV:default}`` placeholders in
YAML string values are expanded. A malformed file raises ``ConfigError`` naming the
file and line. The result is one immutable, typed ``Settings`` object; relative
folders are resolved against the deployment folder (the working directory).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import ConfigError, describe_validation_error

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


def _split_list(value: Any) -> Any:
    """Accept a YAML list or a comma-separated string (the env form)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class ServerSettings(_Section):
    #: HTTP port
    port: int = 8080
    #: bind address (set 0.0.0.0 deliberately, e.g. in a container)
    host: str = "127.0.0.1"
    #: largest accepted JSON request body, bytes (not in the SPEC table; our default)
    max_body_bytes: int = Field(1_048_576, alias="max-body-bytes")
    #: how often an SSE stream sends a ``: heartbeat`` comment (SPEC §6 says 15 s; ours to tune)
    sse_heartbeat_seconds: float = Field(15.0, alias="sse-heartbeat-seconds", gt=0)
    #: how long an idle keep-alive connection stays open, seconds; keep it above the idle timeout of
    #: any proxy or client pool in front (nginx and AWS load balancers: 60 s), or a request it sends
    #: just as the gateway closes the connection is reset (uvicorn's own default is 5 s)
    keep_alive_seconds: int = Field(75, alias="keep-alive-seconds", ge=1)
    #: with ``agent.auth.enabled: false``, the DNS names a request's ``Host`` may carry besides
    #: ``localhost`` (IP literals always pass): ``gw.example.com``, ``*.example.com``, or ``*`` for
    #: any; other names are refused with 403 (``GET /healthz`` answers any), so a web page cannot
    #: reach the gateway by DNS rebinding
    allowed_hosts: list[str] = Field(default_factory=list, alias="allowed-hosts")

    _lists = field_validator("allowed_hosts", mode="before")(_split_list)


class FolderSettings(_Section):
    """A definition folder and its fallback rescan interval. Each folder has its own defaults,
    so setting only one key (e.g. ``AGENT_REFRESH_INTERVAL_MS``) keeps the other."""

    #: the folder, relative to the deployment folder unless absolute
    external_dir: str = Field(alias="external-dir")
    #: fallback rescan interval; the file watcher normally picks a change up within a second
    refresh_interval_ms: int = Field(30000, alias="refresh-interval-ms")


class AgentFolderSettings(FolderSettings):
    #: agent definitions (``<agentKey>.json``)
    external_dir: str = Field("agents", alias="external-dir")
    refresh_interval_ms: int = Field(10000, alias="refresh-interval-ms")


class ModelFolderSettings(FolderSettings):
    #: model definitions (``<modelKey>.json``); the built-in ones are copied in at start
    external_dir: str = Field("models", alias="external-dir")


class ViewportFolderSettings(FolderSettings):
    #: viewports (``<key>.html`` …) rendered by clients
    external_dir: str = Field("viewports", alias="external-dir")


class DataFolderSettings(FolderSettings):
    #: static files served by ``/api/ap/data``; the gateway's own state lives in its hidden ``.agw/``
    external_dir: str = Field("data", alias="external-dir")


class ProviderSettings(_Section):
    #: the provider's base URL (``embedded`` = the built-in scripted local model)
    base_url: str = Field(alias="base-url")
    #: API key, sent as ``Authorization: Bearer`` (OpenAI kinds) or ``x-api-key`` (Anthropic); never logged
    api_key: str = Field("", alias="api-key")
    #: name of an encrypted credential entry (SPEC §12) used instead of ``api-key``
    api_key_ref: str = Field("", alias="api-key-ref")
    #: the provider's default model id
    model: str = ""
    #: request path for protocol ``NEWAPI_OPENAI_COMPATIBLE``
    new_api_path: str = Field("/v1/chat/completions", alias="new-api-path")

    def __repr__(self) -> str:  # never let a key reach a log through repr()
        return f"ProviderSettings(base_url={self.base_url!r}, api_key=***)"


class BashSettings(_Section):
    #: working directory of ``_bash_`` with the sandbox off (empty = the deployment folder);
    #: sandboxed calls work in the chat's workspace
    working_directory: str = Field("", alias="working-directory")
    #: folders tools may read besides the chat's workspace (never ``.`` or ``/``)
    allowed_paths: list[str] = Field(default_factory=list, alias="allowed-paths")
    #: commands ``_bash_`` may run (empty = reject all)
    allowed_commands: list[str] = Field(default_factory=list, alias="allowed-commands")
    #: commands whose path arguments must stay inside the allowed paths (empty = the allowed commands)
    path_checked_commands: list[str] = Field(default_factory=list, alias="path-checked-commands")
    #: allow pipes, redirects and here-docs (the command then runs through the shell)
    shell_features_enabled: bool = Field(False, alias="shell-features-enabled")
    #: the shell that runs a command when shell features are on
    shell_executable: str = Field("bash", alias="shell-executable")
    #: time limit of one command
    shell_timeout_ms: int = Field(10000, alias="shell-timeout-ms")
    #: longest accepted command
    max_command_chars: int = Field(16000, alias="max-command-chars")
    #: commands allowed to use their exec-capable forms (SPEC §14: ``find -exec``, ``sed e``, ``xargs``…)
    exec_capable_commands: list[str] = Field(default_factory=list, alias="exec-capable-commands")

    _lists = field_validator(
        "allowed_paths", "allowed_commands", "path_checked_commands", "exec_capable_commands", mode="before"
    )(_split_list)


class SandboxSettings(_Section):
    """``agent.tools.sandbox`` (SPEC §14): the bubblewrap sandbox around every process tool."""

    #: ``bwrap`` (default) or ``off`` (unsafe: logged as a WARNING at every start)
    mode: str = "bwrap"
    #: the bubblewrap binary (a name looked up on PATH, or an absolute path)
    bwrap_path: str = Field("bwrap", alias="bwrap-path")
    #: each chat's workspace (the tools' working directory and ``HOME``)
    workspace_dir: str = Field("data/.agw/workspaces", alias="workspace-dir")
    #: let sandboxed tools reach the network
    network: bool = False
    #: environment variables passed into the sandbox
    env_passthrough: list[str] = Field(default_factory=list, alias="env-passthrough")
    #: address-space limit of a sandboxed process, MiB
    memory_mb: int = Field(512, alias="memory-mb", gt=0)
    #: CPU-time limit of a sandboxed process
    cpu_seconds: int = Field(30, alias="cpu-seconds", gt=0)
    #: stdout and stderr kept from a sandboxed process, bytes each
    max_output_bytes: int = Field(1_048_576, alias="max-output-bytes", gt=0)

    _lists = field_validator("env_passthrough", mode="before")(_split_list)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        if value is False:  # YAML 1.1 reads a bare ``off`` as false
            return "off"
        if isinstance(value, str) and value.strip().lower() in ("bwrap", "off"):
            return value.strip().lower()
        raise ValueError("must be 'bwrap' or 'off'")


class BrowserToolSettings(_Section):
    """``agent.tools.browser`` (SPEC §13): where ``browser_open`` may connect."""

    #: networks (CIDR) the browser may reach although they are not public: loopback, private and
    #: link-local addresses (the gateway's own port, Redis, cloud metadata) are refused otherwise
    allowed_private_networks: list[str] = Field(default_factory=list, alias="allowed-private-networks")

    _lists = field_validator("allowed_private_networks", mode="before")(_split_list)

    @field_validator("allowed_private_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network (CIDR such as 10.0.0.0/8 or 127.0.0.1/32)") from None
        return value


class FrontendToolSettings(_Section):
    #: how long a frontend tool waits for ``POST /api/ap/submit``
    submit_timeout_ms: int = Field(300000, alias="submit-timeout-ms")


class AgentFileCreateSettings(_Section):
    #: system prompt of an agent written by ``agent_file_create`` when none is given
    default_system_prompt: str = Field(
        "You are a helpful assistant. Answer clearly and concisely.", alias="default-system-prompt"
    )


class ToolsSettings(_Section):
    frontend: FrontendToolSettings = FrontendToolSettings()
    agent_file_create: AgentFileCreateSettings = Field(AgentFileCreateSettings(), alias="agent-file-create")
    bash: BashSettings = BashSettings()
    sandbox: SandboxSettings = SandboxSettings()
    browser: BrowserToolSettings = BrowserToolSettings()


class CapabilitySettings(_Section):
    #: tool definitions (``*.backend``, ``*.frontend``, ``*.action``)
    tools_external_dir: str = Field("tools", alias="tools-external-dir")
    #: fallback rescan interval of the tool folder
    refresh_interval_ms: int = Field(30000, alias="refresh-interval-ms")


class SkillSettings(_Section):
    #: skills, one sub-folder with a ``SKILL.md`` each
    external_dir: str = Field("skills", alias="external-dir")
    #: fallback rescan interval of the skill folder
    refresh_interval_ms: int = Field(30000, alias="refresh-interval-ms")
    #: a skill body is truncated beyond this in the prompt
    max_prompt_chars: int = Field(8000, alias="max-prompt-chars")


class AuthSettings(_Section):
    #: JWT auth on ``/api/**``; enabled with neither ``jwks-uri`` nor ``local-public-key`` the gateway refuses to start
    enabled: bool = True
    #: JWKS URL the signing keys are fetched from
    jwks_uri: str = Field("", alias="jwks-uri")
    #: expected ``iss`` (empty = not checked)
    issuer: str = ""
    #: how long fetched JWKS keys are reused
    jwks_cache_seconds: int = Field(300, alias="jwks-cache-seconds")
    #: PEM text of the verifying public key (YAML only)
    local_public_key: str = Field("", alias="local-public-key")
    #: a JWT whose ``roles`` (or ``role``) claim holds this value sees every user's usage (SPEC §19)
    admin_role: str = Field("admin", alias="admin-role")
    #: when set, ``aud`` is required and must match (SPEC §9)
    audience: str = ""


class CorsSettings(_Section):
    #: answer CORS requests
    enabled: bool = False
    #: the paths CORS applies to
    path_pattern: str = Field("/api/**", alias="path-pattern")
    #: origins allowed (patterns)
    allowed_origin_patterns: list[str] = Field(["http://localhost:8081"], alias="allowed-origin-patterns")
    #: methods allowed
    allowed_methods: list[str] = Field(["GET", "POST", "DELETE", "OPTIONS"], alias="allowed-methods")
    #: request headers allowed
    allowed_headers: list[str] = Field(["*"], alias="allowed-headers")
    #: response headers exposed to the page
    exposed_headers: list[str] = Field(["Content-Type"], alias="exposed-headers")
    #: allow cookies and credentials
    allow_credentials: bool = Field(False, alias="allow-credentials")
    #: how long a browser caches a preflight answer
    max_age_seconds: int = Field(3600, alias="max-age-seconds")

    _lists = field_validator(
        "allowed_origin_patterns", "allowed_methods", "allowed_headers", "exposed_headers", mode="before"
    )(_split_list)


class InteractionLogSettings(_Section):
    #: log every upstream delta at DEBUG
    enabled: bool = True
    #: mask authorization, apiKey, token, secret and password values in that log
    mask_sensitive: bool = Field(True, alias="mask-sensitive")


class BreakerSettings(_Section):
    """``agent.llm.breaker`` (SPEC §19): a model that failed this many calls in a row is skipped for a while."""

    #: consecutive failed calls that open a model's circuit breaker
    failures: int = Field(5, gt=0)
    #: how long an open breaker skips the model before one trial call (half-open)
    open_seconds: float = Field(30, alias="open-seconds", gt=0)


class LlmSettings(_Section):
    interaction_log: InteractionLogSettings = Field(InteractionLogSettings(), alias="interaction-log")
    #: per-model circuit breaker of model groups and single models
    breaker: BreakerSettings = BreakerSettings()
    #: the most text (content, reasoning, tool-call arguments) one model response may stream,
    #: characters; past it the run ends with ``upstream_response_too_large`` (a model stuck in a
    #: loop, or a hostile upstream, cannot fill the gateway's memory)
    max_response_chars: int = Field(16_777_216, alias="max-response-chars", gt=0)
    #: the most deltas one model response may stream (every delta is an event a run keeps)
    max_response_deltas: int = Field(1_000_000, alias="max-response-deltas", gt=0)
    #: the most tool calls one model response may start (each is events, a result and a step
    #: message; a response past the tool-call budget cannot run them anyway)
    max_response_tool_calls: int = Field(128, alias="max-response-tool-calls", gt=0)


class ImageTokenSettings(_Section):
    #: HMAC key for data-file links (empty = tokens off)
    secret: str = ""
    #: earlier keys still accepted (rotation)
    previous_secrets: list[str] = Field(default_factory=list, alias="previous-secrets")
    #: lifetime of a link token
    ttl_seconds: int = Field(86400, alias="ttl-seconds")

    _lists = field_validator("previous_secrets", mode="before")(_split_list)


class UserLimitSettings(_Section):
    #: live runs of one user
    concurrent_runs: int = Field(20, alias="concurrent-runs", gt=0)
    #: model calls per minute of one user (0 = unlimited)
    rpm: int = Field(0, ge=0)
    #: tokens (prompt + completion) per minute of one user (0 = unlimited)
    tpm: int = Field(0, ge=0)
    #: tokens per UTC day of one user (0 = unlimited)
    daily_tokens: int = Field(0, alias="daily-tokens", ge=0)


class LimitSettings(_Section):
    """``agent.limits``: caps on live runs (each includes its pending frontend-tool waits);
    beyond them a query is answered 429 with ``Retry-After``."""

    #: live runs of all users together
    concurrent_runs: int = Field(1000, alias="concurrent-runs", gt=0)
    user: UserLimitSettings = UserLimitSettings()
    #: the ``Retry-After`` seconds sent with the 429
    retry_after_seconds: int = Field(5, alias="retry-after-seconds", gt=0)


class ClusterSettings(_Section):
    """``agent.cluster`` (SPEC §16): several instances on one Redis; empty ``redis-url`` = one instance."""

    #: ``redis://host:port/db`` shared by every instance (empty = single instance, no Redis)
    redis_url: str = Field("", alias="redis-url")
    #: an instance whose heartbeat is older than this is lost: its runs end with ``instance_lost``
    lease_seconds: float = Field(15, alias="lease-seconds", gt=0)
    #: a readable prefix of this instance's id in logs and run records
    instance_name: str = Field("", alias="instance-name", max_length=40)


class RunSettings(_Section):
    """``agent.runs`` (SPEC §15): how long an ended run's event log stays attachable, and what a
    client disconnect does to a run whose query did not say (``onDisconnect``)."""

    #: how long an ended run stays attachable
    retention_seconds: float = Field(300, alias="retention-seconds", ge=0)
    #: the most ended runs kept attachable, all users together (the oldest goes first); each holds its
    #: whole event log in memory
    max_retained: int = Field(2000, alias="max-retained", ge=0)
    #: the most ended runs of one user kept attachable (the user's oldest goes first), so one user's
    #: many short runs cannot push everyone else's out, nor fill the memory
    max_retained_per_user: int = Field(100, alias="max-retained-per-user", ge=0)
    #: the most events all ended runs kept attachable may hold together (the oldest run goes first):
    #: the count caps alone let 2,000 long runs keep gigabytes; a short delta's event is about 330
    #: bytes, so the default is a few hundred MB of short deltas
    max_retained_events: int = Field(1_000_000, alias="max-retained-events", ge=0)
    #: what a client disconnect does to a run whose query did not say: ``cancel`` or ``continue``
    on_disconnect: str = Field("cancel", alias="on-disconnect", pattern="^(cancel|continue)$")


class TelemetrySettings(_Section):
    """``agent.telemetry`` (SPEC §19): OpenTelemetry spans of runs, model and tool calls, exported with
    the optional extra ``otel`` (``pip install 'agent-gateway[otel]'``)."""

    #: OTLP/HTTP base URL of the collector (spans go to ``<url>/v1/traces``); empty = no spans
    otlp_endpoint: str = Field("", alias="otlp-endpoint")
    #: ``service.name`` of the exported spans
    service_name: str = Field("agent-gateway", alias="service-name")


class McpSettings(_Section):
    """``agent.mcp`` (SPEC §18): MCP servers as tool sources."""

    #: MCP server definitions, one ``<serverKey>.json`` each (hot-reloaded like agents)
    servers_dir: str = Field("mcp-servers", alias="servers-dir")


class UploadSettings(_Section):
    """``agent.upload`` (SPEC §23): files users upload into a chat's workspace."""

    #: largest upload (and largest published artifact), bytes; beyond it ``POST /api/ap/upload`` answers 413
    max_bytes: int = Field(20 * 1024 * 1024, alias="max-bytes", gt=0)
    #: accepted types: MIME types (``text/csv``), families (``image/*``) or extensions (``.csv``); empty = any
    allowed_types: list[str] = Field(default_factory=list, alias="allowed-types")
    #: the longest an upload's body may take to arrive; a slower one is refused (408) and nothing kept
    timeout_seconds: float = Field(300, alias="timeout-seconds", gt=0)

    _lists = field_validator("allowed_types", mode="before")(_split_list)


class AgentSettings(_Section):
    catalog: AgentFolderSettings = AgentFolderSettings()
    model: ModelFolderSettings = ModelFolderSettings()
    viewport: ViewportFolderSettings = ViewportFolderSettings()
    data: DataFolderSettings = DataFolderSettings()
    capability: CapabilitySettings = CapabilitySettings()
    tools: ToolsSettings = ToolsSettings()
    skill: SkillSettings = SkillSettings()
    auth: AuthSettings = AuthSettings()
    cors: CorsSettings = CorsSettings()
    llm: LlmSettings = LlmSettings()
    chat_image_token: ImageTokenSettings = Field(ImageTokenSettings(), alias="chat-image-token")
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    limits: LimitSettings = LimitSettings()
    runs: RunSettings = RunSettings()
    cluster: ClusterSettings = ClusterSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    mcp: McpSettings = McpSettings()
    upload: UploadSettings = UploadSettings()


class ChatMemorySettings(_Section):
    #: chat files (JSONL), one per chat
    dir: str = "./chats"
    #: sliding window of past runs sent to the model
    k: int = 20
    #: encoding of the chat files: one that writes ASCII as ASCII (UTF-8, GBK, …), since each line
    #: ends with a newline byte
    charset: str = "UTF-8"
    #: tools recorded as actions in the chat memory
    action_tools: list[str] = Field(default_factory=list, alias="action-tools")

    _lists = field_validator("action_tools", mode="before")(_split_list)

    @field_validator("charset")
    @classmethod
    def _ascii_compatible(cls, charset: str) -> str:
        """A charset that does not write JSON's ASCII as ASCII (UTF-16, UTF-32) would lose the
        whole chat: lines are split at the newline byte, and each line would carry a BOM."""
        sample = '{"_type":"query"}\n'
        try:
            encoded = sample.encode(charset)
        except LookupError:
            raise ValueError(f"unknown charset {charset!r}") from None
        if encoded != sample.encode("ascii"):
            raise ValueError(f"charset {charset!r} does not write ASCII as ASCII (use UTF-8, or one like GBK)")
        return charset


class MemorySettings(_Section):
    chat: ChatMemorySettings = ChatMemorySettings()


class SchedulerSettings(_Section):
    #: run the scheduled jobs (SPEC §11)
    enabled: bool = True
    #: how late a missed job may still run
    misfire_grace_seconds: int = Field(300, alias="misfire-grace-seconds")
    #: several missed runs of one job run once
    coalesce: bool = True
    #: the most jobs one user may have (finished date jobs, kept with their outcome, count until deleted)
    max_jobs_per_user: int = Field(100, alias="max-jobs-per-user", ge=0)
    #: the most jobs of every user together
    max_jobs: int = Field(10_000, alias="max-jobs", ge=0)
    #: the longest message a job may carry, in characters (every job's message is in the schedules file)
    max_message_chars: int = Field(20_000, alias="max-message-chars", ge=1, le=200_000)


class CredentialSettings(_Section):
    #: encrypted store file, relative to the deployment folder
    #: under the data folder's hidden ``.agw/``, which ``/api/ap/data`` never serves
    file: str = "data/.agw/credentials.json"
    #: environment variable holding the master secret
    master_secret_env: str = Field("AGW_MASTER_SECRET", alias="master-secret-env")
    #: or a file holding it
    master_secret_file: str = Field("", alias="master-secret-file")


class LoggingSettings(_Section):
    """``logging``: ``format: text`` (default, one human line per record) or ``json`` (one JSON object
    per line on stderr: ``ts, level, logger, msg`` and ``exc`` when there is a traceback)."""

    format: str = Field("text", pattern="^(text|json)$")


class Settings(_Section):
    """Every setting of SPEC §2, typed and frozen. ``base_dir`` is the deployment folder."""

    server: ServerSettings = ServerSettings()
    agent: AgentSettings = AgentSettings()
    memory: MemorySettings = MemorySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    credentials: CredentialSettings = CredentialSettings()
    logging: LoggingSettings = LoggingSettings()
    base_dir: Path = Field(default_factory=Path.cwd, alias="base-dir")

    def resolve(self, folder: str) -> Path:
        """A configured folder as an absolute path (relative ones are under ``base_dir``)."""
        path = Path(folder).expanduser()
        return (path if path.is_absolute() else self.base_dir / path).resolve()

    @property
    def agents_dir(self) -> Path:
        return self.resolve(self.agent.catalog.external_dir)

    @property
    def models_dir(self) -> Path:
        return self.resolve(self.agent.model.external_dir)

    @property
    def tools_dir(self) -> Path:
        return self.resolve(self.agent.capability.tools_external_dir)

    @property
    def skills_dir(self) -> Path:
        return self.resolve(self.agent.skill.external_dir)

    @property
    def viewports_dir(self) -> Path:
        return self.resolve(self.agent.viewport.external_dir)

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.agent.data.external_dir)

    @property
    def chats_dir(self) -> Path:
        return self.resolve(self.memory.chat.dir)

    @property
    def state_dir(self) -> Path:
        """The gateway's own state (``data/.agw``): never served, never visible to a tool."""
        return self.data_dir / ".agw"

    @property
    def workspaces_dir(self) -> Path:
        return self.resolve(self.agent.tools.sandbox.workspace_dir)

    @property
    def screenshots_dir(self) -> Path:
        """``browser_open``'s screenshots (``data/screenshots``): each chat's own pages, served by
        link only, so never visible to a tool (SPEC §14: other users' files)."""
        return self.data_dir / SCREENSHOT_DIR

    @property
    def mcp_servers_dir(self) -> Path:
        return self.resolve(self.agent.mcp.servers_dir)


#: ``browser_open``'s screenshots, under the data folder (``Settings.screenshots_dir``)
SCREENSHOT_DIR = "screenshots"

#: environment variable → dotted key (SPEC §2 table)
ENV_KEYS: Mapping[str, str] = {
    "SERVER_PORT": "server.port",
    "SERVER_HOST": "server.host",
    "SERVER_ALLOWED_HOSTS": "server.allowed-hosts",
    "AGENT_EXTERNAL_DIR": "agent.catalog.external-dir",
    "AGENT_REFRESH_INTERVAL_MS": "agent.catalog.refresh-interval-ms",
    "AGENT_MODEL_EXTERNAL_DIR": "agent.model.external-dir",
    "AGENT_MODEL_REFRESH_INTERVAL_MS": "agent.model.refresh-interval-ms",
    "AGENT_VIEWPORT_EXTERNAL_DIR": "agent.viewport.external-dir",
    "AGENT_VIEWPORT_REFRESH_INTERVAL_MS": "agent.viewport.refresh-interval-ms",
    "AGENT_DATA_EXTERNAL_DIR": "agent.data.external-dir",
    "AGENT_TOOLS_EXTERNAL_DIR": "agent.capability.tools-external-dir",
    "AGENT_CAPABILITY_REFRESH_INTERVAL_MS": "agent.capability.refresh-interval-ms",
    "AGENT_TOOLS_FRONTEND_SUBMIT_TIMEOUT_MS": "agent.tools.frontend.submit-timeout-ms",
    "AGENT_TOOLS_AGENT_FILE_CREATE_DEFAULT_SYSTEM_PROMPT": "agent.tools.agent-file-create.default-system-prompt",
    "AGENT_BASH_WORKING_DIRECTORY": "agent.tools.bash.working-directory",
    "AGENT_BASH_ALLOWED_PATHS": "agent.tools.bash.allowed-paths",
    "AGENT_BASH_ALLOWED_COMMANDS": "agent.tools.bash.allowed-commands",
    "AGENT_BASH_PATH_CHECKED_COMMANDS": "agent.tools.bash.path-checked-commands",
    "AGENT_BASH_SHELL_FEATURES_ENABLED": "agent.tools.bash.shell-features-enabled",
    "AGENT_BASH_SHELL_EXECUTABLE": "agent.tools.bash.shell-executable",
    "AGENT_BASH_SHELL_TIMEOUT_MS": "agent.tools.bash.shell-timeout-ms",
    "AGENT_BASH_MAX_COMMAND_CHARS": "agent.tools.bash.max-command-chars",
    "AGENT_BASH_EXEC_CAPABLE_COMMANDS": "agent.tools.bash.exec-capable-commands",
    "AGENT_TOOLS_SANDBOX_MODE": "agent.tools.sandbox.mode",
    "AGENT_TOOLS_SANDBOX_NETWORK": "agent.tools.sandbox.network",
    "AGENT_TOOLS_SANDBOX_WORKSPACE_DIR": "agent.tools.sandbox.workspace-dir",
    "AGENT_TOOLS_SANDBOX_ENV_PASSTHROUGH": "agent.tools.sandbox.env-passthrough",
    "AGENT_TOOLS_BROWSER_ALLOWED_PRIVATE_NETWORKS": "agent.tools.browser.allowed-private-networks",
    "AGENT_CLUSTER_REDIS_URL": "agent.cluster.redis-url",
    "AGENT_CLUSTER_LEASE_SECONDS": "agent.cluster.lease-seconds",
    "AGENT_CLUSTER_INSTANCE_NAME": "agent.cluster.instance-name",
    "AGENT_RUNS_RETENTION_SECONDS": "agent.runs.retention-seconds",
    "AGENT_RUNS_MAX_RETAINED": "agent.runs.max-retained",
    "AGENT_RUNS_MAX_RETAINED_PER_USER": "agent.runs.max-retained-per-user",
    "AGENT_RUNS_MAX_RETAINED_EVENTS": "agent.runs.max-retained-events",
    "AGENT_RUNS_ON_DISCONNECT": "agent.runs.on-disconnect",
    "SCHEDULER_MAX_JOBS_PER_USER": "scheduler.max-jobs-per-user",
    "SCHEDULER_MAX_JOBS": "scheduler.max-jobs",
    "SCHEDULER_MAX_MESSAGE_CHARS": "scheduler.max-message-chars",
    "AGENT_LIMITS_CONCURRENT_RUNS": "agent.limits.concurrent-runs",
    "AGENT_LIMITS_USER_CONCURRENT_RUNS": "agent.limits.user.concurrent-runs",
    "AGENT_LIMITS_USER_RPM": "agent.limits.user.rpm",
    "AGENT_LIMITS_USER_TPM": "agent.limits.user.tpm",
    "AGENT_LIMITS_USER_DAILY_TOKENS": "agent.limits.user.daily-tokens",
    "AGENT_LLM_BREAKER_FAILURES": "agent.llm.breaker.failures",
    "AGENT_LLM_BREAKER_OPEN_SECONDS": "agent.llm.breaker.open-seconds",
    "AGENT_AUTH_ADMIN_ROLE": "agent.auth.admin-role",
    "AGENT_SKILL_EXTERNAL_DIR": "agent.skill.external-dir",
    "AGENT_SKILL_REFRESH_INTERVAL_MS": "agent.skill.refresh-interval-ms",
    "AGENT_SKILL_MAX_PROMPT_CHARS": "agent.skill.max-prompt-chars",
    "AGENT_AUTH_ENABLED": "agent.auth.enabled",
    "AGENT_AUTH_JWKS_URI": "agent.auth.jwks-uri",
    "AGENT_AUTH_ISSUER": "agent.auth.issuer",
    "AGENT_AUTH_JWKS_CACHE_SECONDS": "agent.auth.jwks-cache-seconds",
    "AGENT_AUTH_AUDIENCE": "agent.auth.audience",
    "CHAT_IMAGE_TOKEN_SECRET": "agent.chat-image-token.secret",
    "CHAT_IMAGE_TOKEN_PREVIOUS_SECRETS": "agent.chat-image-token.previous-secrets",
    "CHAT_IMAGE_TOKEN_TTL_SECONDS": "agent.chat-image-token.ttl-seconds",
    "MEMORY_CHAT_DIR": "memory.chat.dir",
    "MEMORY_CHAT_K": "memory.chat.k",
    "MEMORY_CHAT_CHARSET": "memory.chat.charset",
    "MEMORY_CHAT_ACTION_TOOLS": "memory.chat.action-tools",
    "AGENT_LLM_INTERACTION_LOG_ENABLED": "agent.llm.interaction-log.enabled",
    "AGENT_LLM_INTERACTION_LOG_MASK_SENSITIVE": "agent.llm.interaction-log.mask-sensitive",
    "AGENT_LLM_MAX_RESPONSE_CHARS": "agent.llm.max-response-chars",
    "AGENT_LLM_MAX_RESPONSE_DELTAS": "agent.llm.max-response-deltas",
    "LOGGING_FORMAT": "logging.format",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "agent.telemetry.otlp-endpoint",
    "OTEL_SERVICE_NAME": "agent.telemetry.service-name",
    "AGENT_MCP_SERVERS_DIR": "agent.mcp.servers-dir",
    "AGENT_UPLOAD_MAX_BYTES": "agent.upload.max-bytes",
    "AGENT_UPLOAD_ALLOWED_TYPES": "agent.upload.allowed-types",
    "AGENT_UPLOAD_TIMEOUT_SECONDS": "agent.upload.timeout-seconds",
}

DEFAULT_FILES: tuple[Path, ...] = (Path("application.yml"), Path("/opt/application.yml"))


def expand_placeholders(value: Any, env: Mapping[str, str]) -> Any:
    """Expand ``${NAME:default}`` in every string of a parsed YAML tree."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand_placeholders(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_placeholders(v, env) for v in value]
    return value


def read_yaml(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Parse one YAML file; a syntax error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        tree = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{path}: {where}: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: line 1: the top level must be a mapping, found {type(tree).__name__}")
    return expand_placeholders(tree, env)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, recursively for nested mappings (a new dict; inputs untouched)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


#: the provider of the built-in ``local-demo`` model; ``embedded`` = the scripted local model
LOCAL_PROVIDER = "local"
EMBEDDED_BASE_URL = "embedded"


def _default_local_provider(tree: dict[str, Any]) -> None:
    """Provider ``local`` defaults to the embedded scripted model, so the built-in
    ``models/local-demo.json`` always loads; configuring ``agent.providers.local`` overrides it."""
    agent = tree.setdefault("agent", {})
    if not isinstance(agent, dict):
        return
    providers = agent.setdefault("providers", {})
    if isinstance(providers, dict) and LOCAL_PROVIDER not in providers:
        providers[LOCAL_PROVIDER] = {"base-url": EMBEDDED_BASE_URL}


def load_settings(
    base_dir: Path | None = None,
    *,
    files: tuple[Path, ...] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build ``Settings`` from defaults, the YAML files, the environment and ``overrides``.

    ``files`` defaults to ``./application.yml`` (under ``base_dir``) then
    ``/opt/application.yml``; missing files are skipped. ``overrides`` is a nested
    mapping applied last (tests and the CLI use it).
    """
    base = (base_dir or Path.cwd()).resolve()
    environ = os.environ if env is None else env
    candidates = files if files is not None else DEFAULT_FILES
    tree: dict[str, Any] = {}
    for file in candidates:
        path = file if file.is_absolute() else base / file
        if path.is_file():
            tree = deep_merge(tree, read_yaml(path, environ))
    for name, dotted in ENV_KEYS.items():
        if name in environ:
            _set_dotted(tree, dotted, environ[name])
    if overrides:
        tree = deep_merge(tree, overrides)
    tree["base-dir"] = base
    _default_local_provider(tree)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe_validation_error(exc)}") from exc


# -- unknown keys (SPEC §22) ----------------------------------------------------------------

#: fields of ``Settings`` that no configuration file sets (the loader fills them in)
NOT_CONFIGURABLE: frozenset[str] = frozenset({"base_dir"})


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The settings class of a nested section field, or None for a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def map_entry_model(annotation: Any) -> type[BaseModel] | None:
    """``dict[str, X]`` with a settings class ``X`` (``agent.providers``): ``X``; otherwise None."""
    if typing.get_origin(annotation) is dict:
        args = typing.get_args(annotation)
        if len(args) == 2:
            return _section_model(args[1])
    return None


def _normalized(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _closest(key: str, spelled: list[str]) -> str | None:
    """The known spelling closest to ``key``: same letters in another case or separator, else difflib's."""
    for candidate in spelled:
        if _normalized(candidate) == _normalized(key):
            return candidate
    close = difflib.get_close_matches(key, spelled, n=1, cutoff=0.6)
    return close[0] if close else None


def _walk_unknown(tree: Mapping[Any, Any], model: type[BaseModel], prefix: str,
                  found: list[tuple[str, str | None]]) -> None:
    fields = {name: field for name, field in model.model_fields.items() if name not in NOT_CONFIGURABLE}
    known = {key: field for name, field in fields.items() for key in {name, field.alias or name}}
    spelled = [field.alias or name for name, field in fields.items()]
    for raw_key, value in tree.items():
        key = str(raw_key)
        field = known.get(key)
        if field is None:
            suggestion = _closest(key, spelled)
            found.append((prefix + key, prefix + suggestion if suggestion else None))
            continue
        if not isinstance(value, Mapping):
            continue  # a wrong type is the validator's to report, not an unknown key
        section = _section_model(field.annotation)
        if section is not None:
            _walk_unknown(value, section, f"{prefix}{key}.", found)
            continue
        entry = map_entry_model(field.annotation)
        if entry is not None:  # free-form names (``agent.providers.<name>``); their own keys are checked
            for name, item in value.items():
                if isinstance(item, Mapping):
                    _walk_unknown(item, entry, f"{prefix}{key}.{name}.", found)


def unknown_keys(tree: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """Every key of one parsed configuration file that no setting reads, as ``(dotted key,
    closest known dotted key or None)`` in file order: ``{"sever": …}`` → ``[("sever", "server")]``.

    Keys are checked against the ``Settings`` model (aliases and field names); the names under
    ``agent.providers`` are free-form, the keys inside each provider are checked. Pydantic ignores
    unknown keys, so without this a typo silently keeps the default (SPEC §22).
    """
    found: list[tuple[str, str | None]] = []
    _walk_unknown(tree, Settings, "", found)
    return found


def unknown_keys_in_files(
    base_dir: Path, *, files: tuple[Path, ...] | None = None, env: Mapping[str, str] | None = None
) -> list[tuple[Path, str, str | None]]:
    """``unknown_keys`` of every configuration file ``load_settings`` reads (same files, same
    order), as ``(file, dotted key, suggestion)``. Environment variables map to known keys only."""
    environ = os.environ if env is None else env
    found: list[tuple[Path, str, str | None]] = []
    for file in files if files is not None else DEFAULT_FILES:
        path = file if file.is_absolute() else base_dir.resolve() / file
        if path.is_file():
            found.extend((path, key, suggestion) for key, suggestion in unknown_keys(read_yaml(path, environ)))
    return found
