"""``docs/API.md`` stays in step with the code it documents (SPEC §22).

The event table is the generator's output; every operation of the OpenAPI document, every
sidecar method and every error code of ``app/errors.py`` is named; every "SPEC §N" the README
cites maps to a section of the document, and every link of that map lands on a heading.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.api.app import create_app
from app.config import load_settings
from app.contract.asyncapi import event_table_markdown
from app.errors import GatewayError
from app.sidecar.methods import SidecarMethods

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "API.md"
BEGIN = "<!-- BEGIN events (generated: python -m app.contract.asyncapi --markdown) -->\n"
END = "<!-- END events -->"


@pytest.fixture(scope="module")
def doc() -> str:
    return API_MD.read_text(encoding="utf-8")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces → ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: str) -> set[str]:
    return {github_anchor(line.lstrip("#")) for line in doc.splitlines() if re.match(r"#{1,6} ", line)}


def spec_map(doc: str) -> dict[str, list[str]]:
    """The table at the top: ``SPEC §`` cell → the anchors it links to."""
    table = doc.split("| SPEC § | section here |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    return {cell.strip(): re.findall(r"\]\(#([^)]+)\)", target) for cell, target in rows}


def test_the_event_table_is_the_generated_one(doc: str) -> None:
    assert BEGIN in doc and END in doc
    table = doc.split(BEGIN, 1)[1].split(END, 1)[0]
    assert table == event_table_markdown(), (
        "docs/API.md's event table is out of date: replace it with the output of "
        "`python -m app.contract.asyncapi --markdown`")


def test_every_http_operation_is_documented(doc: str, tmp_path: Path) -> None:
    settings = load_settings(tmp_path, files=(), env={"AGENT_AUTH_ENABLED": "false"})
    operations = [f"{method.upper()} {path}" for path, item in create_app(settings).openapi()["paths"].items()
                  for method in item]
    assert "POST /api/ap/query" in operations
    missing = [op for op in operations if not re.search(rf"`{re.escape(op)}[`?]", doc)]
    assert missing == [], f"operations of /openapi.json that docs/API.md does not name: {missing}"
    for extra in ("GET /docs", "GET /asyncapi.json", "GET /openapi.json"):
        assert extra in doc


def test_every_sidecar_method_is_documented(doc: str) -> None:
    names = SidecarMethods(gateway=None, writer=None).names  # type: ignore[arg-type]  # names only
    assert "agent.query" in names
    assert [name for name in sorted(names) if f"| `{name}` |" not in doc] == []


def test_every_error_code_is_documented(doc: str) -> None:
    def subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    errors = doc.split("## Errors", 1)[1]
    missing = [f"{cls.__name__} {cls.code}" for cls in subclasses(GatewayError)[1:]
               if cls.__module__ == "app.errors" and (f"`{cls.__name__}`" not in errors or str(cls.code) not in errors)]
    assert missing == [], f"error classes of app/errors.py missing from docs/API.md's Errors: {missing}"


def test_every_spec_section_the_readme_cites_maps_to_a_heading(doc: str) -> None:
    cited = set(re.findall(r"SPEC §(\d+)", (ROOT / "README.md").read_text(encoding="utf-8")))
    assert cited, "the README cites no SPEC section any more: drop this test"
    table = spec_map(doc)
    mapped = {number for cell in table for number in re.findall(r"§(\d+)", cell)}
    assert cited <= mapped, f"SPEC sections the README cites that docs/API.md does not map: {cited - mapped}"
    targets = anchors(doc)
    broken = [link for links in table.values() for link in links if link not in targets]
    assert broken == [] and all(table.values()), f"map links that land on no heading: {broken}"
