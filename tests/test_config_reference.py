"""``docs/configuration.md`` is generated from the settings model, and unknown configuration keys
are found with the closest known key (SPEC §22)."""

from __future__ import annotations

from pathlib import Path

from app.config import ENV_KEYS, unknown_keys, unknown_keys_in_files
from app.config_reference import REGENERATE, Row, doc_comments, render, sections

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _rows() -> dict[str, Row]:
    return {row.key: row for section in sections() for row in section.rows}


def test_the_committed_configuration_reference_is_current() -> None:
    committed = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    assert committed == render(), f"docs/configuration.md is out of date with app/config.py; run: {REGENERATE}"


def test_every_environment_variable_is_documented_on_its_key() -> None:
    rows = _rows()
    for name, dotted in ENV_KEYS.items():
        assert dotted in rows, f"ENV_KEYS[{name!r}] names {dotted!r}, which is no setting"
        assert rows[dotted].env == name


def test_a_row_says_type_default_env_and_meaning() -> None:
    rows = _rows()
    assert rows["server.port"] == Row("server.port", "SERVER_PORT", "integer", "`8080`", "HTTP port")
    assert rows["agent.tools.bash.allowed-commands"].type == "list of strings"
    assert rows["agent.tools.sandbox.memory-mb"].type == "integer (> 0)"
    assert rows["agent.runs.on-disconnect"].type == "string (cancel | continue)"
    assert rows["agent.providers.<name>.base-url"].default == "(required)"
    assert "base-dir" not in render() and "base_dir" not in render()  # set by the loader, not configurable


def test_meanings_come_from_the_doc_comments_above_fields() -> None:
    from app.config import AgentFolderSettings, SandboxSettings

    assert doc_comments(SandboxSettings)["bwrap_path"].startswith("the bubblewrap binary")
    inherited = doc_comments(AgentFolderSettings)
    assert inherited["refresh_interval_ms"].startswith("fallback rescan interval")  # from FolderSettings
    assert inherited["external_dir"].startswith("agent definitions")  # the subclass's own wins


def test_unknown_keys_name_the_closest_known_key() -> None:
    tree = {
        "sever": {"port": 1},
        "server": {"prot": 1, "max_body_bytes": 5, "max-body-bytes": 5},
        "agent": {"auth": {"enabeld": True}, "chatImageToken": {}, "providers": {"mine": {"base-ur": "x"}}},
        "memory": "not a mapping is the validator's business",
        "base-dir": "/elsewhere",
        "zzzz": 1,
    }
    assert unknown_keys(tree) == [
        ("sever", "server"),
        ("server.prot", "server.port"),
        ("agent.auth.enabeld", "agent.auth.enabled"),
        ("agent.chatImageToken", "agent.chat-image-token"),
        ("agent.providers.mine.base-ur", "agent.providers.mine.base-url"),
        ("base-dir", None),
        ("zzzz", None),
    ]


def test_known_keys_and_free_form_provider_names_are_not_reported() -> None:
    tree = {"server": {"port": 1, "host": "x"}, "agent": {"providers": {"anything-goes": {"base-url": "u"}},
                                                           "tools": {"sandbox": {"mode": "off"}}}}
    assert unknown_keys(tree) == []


def test_unknown_keys_in_files_reads_the_files_only(tmp_path: Path) -> None:
    (tmp_path / "application.yml").write_text("sever:\n  port: 1\n", encoding="utf-8")
    found = unknown_keys_in_files(tmp_path, files=(Path("application.yml"),), env={"SEVER_PORT": "1"})
    assert found == [(tmp_path.resolve() / "application.yml", "sever", "server")]
    assert unknown_keys_in_files(tmp_path, files=(Path("missing.yml"),), env={}) == []
