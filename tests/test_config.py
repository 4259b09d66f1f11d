"""Configuration (SPEC §2): defaults → ./application.yml → /opt/application.yml → environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from app.config import ENV_KEYS, Settings, load_settings
from app.errors import ConfigError


def test_defaults_match_the_spec_table(tmp_path: Path) -> None:
    s = load_settings(tmp_path, files=(), env={})
    assert (s.server.port, s.server.host) == (8080, "127.0.0.1")
    assert s.agent.catalog.external_dir == "agents" and s.agent.catalog.refresh_interval_ms == 10000
    assert s.agent.model.refresh_interval_ms == 30000 and s.agent.data.external_dir == "data"
    assert s.agent.tools.frontend.submit_timeout_ms == 300000
    bash = s.agent.tools.bash
    assert bash.allowed_commands == [] and not bash.shell_features_enabled and bash.shell_executable == "bash"
    assert (bash.shell_timeout_ms, bash.max_command_chars) == (10000, 16000)
    assert s.agent.skill.max_prompt_chars == 8000
    assert s.agent.auth.enabled is True
    assert s.agent.chat_image_token.secret == "" and s.agent.chat_image_token.ttl_seconds == 86400
    assert (s.memory.chat.dir, s.memory.chat.k, s.memory.chat.charset) == ("./chats", 20, "UTF-8")
    assert s.agent.llm.interaction_log.enabled and s.agent.llm.interaction_log.mask_sensitive
    cors = s.agent.cors
    assert not cors.enabled and cors.allowed_origin_patterns == ["http://localhost:8081"] and cors.max_age_seconds == 3600
    assert s.agents_dir == tmp_path.resolve() / "agents"
    assert s.chats_dir == tmp_path.resolve() / "chats"


def test_every_spec_environment_variable_is_mapped(tmp_path: Path) -> None:
    values = {
        "SERVER_PORT": "9001", "AGENT_REFRESH_INTERVAL_MS": "500", "AGENT_BASH_ALLOWED_COMMANDS": "ls, cat",
        "AGENT_BASH_SHELL_FEATURES_ENABLED": "true", "MEMORY_CHAT_K": "3", "AGENT_AUTH_ENABLED": "false",
        "CHAT_IMAGE_TOKEN_PREVIOUS_SECRETS": "a,b", "MEMORY_CHAT_ACTION_TOOLS": "switch_theme",
        "AGENT_LLM_INTERACTION_LOG_MASK_SENSITIVE": "false",
    }
    s = load_settings(tmp_path, files=(), env=values)
    assert s.server.port == 9001 and s.agent.catalog.refresh_interval_ms == 500
    assert s.agent.tools.bash.allowed_commands == ["ls", "cat"] and s.agent.tools.bash.shell_features_enabled
    assert s.memory.chat.k == 3 and s.agent.auth.enabled is False
    assert s.agent.chat_image_token.previous_secrets == ["a", "b"]
    assert s.memory.chat.action_tools == ["switch_theme"]
    assert s.agent.llm.interaction_log.mask_sensitive is False
    # every variable of the table names a real setting (walk the dotted key through the aliases)
    for name, dotted in ENV_KEYS.items():
        model: type[BaseModel] = Settings
        for part in dotted.split("."):
            fields = {(f.alias or n): f for n, f in model.model_fields.items()}
            assert part in fields, f"{name}: {dotted} has no '{part}'"
            annotation = fields[part].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation


def test_yaml_layers_and_placeholders(tmp_path: Path) -> None:
    (tmp_path / "application.yml").write_text(
        "server:\n  port: ${PORT_FROM_ENV:7000}\n"
        "agent:\n  model:\n    external-dir: ${MODELS:my-models}\n"
        "  providers:\n    p:\n      base-url: http://x\n      api-key: ${KEY:}\n"
    )
    opt = tmp_path / "opt.yml"
    opt.write_text("server:\n  host: 0.0.0.0\n")
    s = load_settings(tmp_path, files=(Path("application.yml"), opt), env={"KEY": "secret"})
    assert s.server.port == 7000 and s.server.host == "0.0.0.0"
    assert s.models_dir == tmp_path.resolve() / "my-models"
    assert s.agent.providers["p"].api_key == "secret"
    assert "secret" not in repr(s.agent.providers["p"])
    # the environment beats both files
    s = load_settings(tmp_path, files=(Path("application.yml"), opt), env={"SERVER_PORT": "7100", "PORT_FROM_ENV": "1"})
    assert s.server.port == 7100


@pytest.mark.parametrize(
    ("text", "line"),
    [("server:\n  port: [1,\n", 3), ("a: 1\n b: 2\n", 2), ("server:\n\tport: 1\n", 2)],
    ids=["unclosed", "indent", "tab"],
)
def test_malformed_file_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    (tmp_path / "application.yml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, files=(Path("application.yml"),), env={})
    assert "application.yml" in caught.value.message and f"line {line}" in caught.value.message


def test_wrong_types_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server.port"):
        load_settings(tmp_path, files=(), env={"SERVER_PORT": "not-a-port"})
    (tmp_path / "application.yml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(tmp_path, files=(Path("application.yml"),), env={})


@pytest.mark.parametrize(("charset", "message"), [("UTF-16", "does not write ASCII"), ("UTF-32-LE", "does not write ASCII"),
                                                ("no-such-charset", "unknown charset")])
def test_a_chat_charset_that_would_lose_every_chat_is_refused(tmp_path: Path, charset: str, message: str) -> None:
    """Chat lines end at a newline byte; UTF-16 wrote a BOM on every line and split its newlines,
    so every line was skipped on reading: the whole chat lost, with no error."""
    with pytest.raises(ConfigError, match="memory.chat.charset") as caught:
        load_settings(tmp_path, files=(), env={"MEMORY_CHAT_CHARSET": charset})
    assert message in caught.value.message
    assert load_settings(tmp_path, files=(), env={"MEMORY_CHAT_CHARSET": "GBK"}).memory.chat.charset == "GBK"


def test_cli_refuses_to_start_on_a_malformed_file(tmp_path: Path) -> None:
    (tmp_path / "application.yml").write_text("agent: [\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SERVER_"))}
    done = subprocess.run([sys.executable, "-m", "app", "serve"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "application.yml" in done.stderr and "line 2" in done.stderr
    assert done.stdout == ""


def test_local_provider_defaults_to_the_embedded_model(tmp_path: Path) -> None:
    assert load_settings(tmp_path, files=(), env={}).agent.providers["local"].base_url == "embedded"
    (tmp_path / "application.yml").write_text("agent:\n  providers:\n    local:\n      base-url: http://127.0.0.1:9\n")
    configured = load_settings(tmp_path, files=(Path("application.yml"),), env={})
    assert configured.agent.providers["local"].base_url == "http://127.0.0.1:9"
