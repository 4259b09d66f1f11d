"""Skills (SPEC §3.4) and viewports (SPEC §3.5)."""

from __future__ import annotations

import os
import threading

import pytest

from app.catalog.skills import split_front_matter
from app.errors import DefinitionError

from .support import Deployment


def test_skill_id_is_lower_cased_folder_name(deploy: Deployment) -> None:
    deploy.write("skills/Math_Basic/SKILL.md", '---\nname: "math"\ndescription: "adds"\nlicense: MIT\n---\n\n# Body\ntext\n')
    catalog = deploy.build()
    skill = catalog.skills["math_basic"]
    assert (skill.name, skill.description, skill.body) == ("math", "adds", "# Body\ntext")
    assert skill.folder.name == "Math_Basic"


def test_skill_name_defaults_to_id(deploy: Deployment) -> None:
    deploy.write("skills/calc/SKILL.md", "---\ndescription: d\n---\nbody")
    assert deploy.build().skills["calc"].name == "calc"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("no front matter", "must start with YAML front matter"),
        ("---\nname: x\ndescription: d\n", "not closed"),
        ("---\nname: x\n---\nbody", "'description' is required"),
        ("---\n- a list\n---\nbody", "mapping"),
        ("---\nname: [unclosed\n---\nbody", "front matter"),
    ],
)
def test_invalid_skill_is_rejected(deploy: Deployment, content: str, match: str) -> None:
    deploy.write("skills/bad/SKILL.md", content)
    deploy.write("skills/good/SKILL.md", "---\ndescription: d\n---\n")
    catalog = deploy.build()
    assert list(catalog.skills) == ["good"]
    (rejection,) = catalog.rejections
    assert rejection.kind == "skill" and rejection.file == "skills/bad/SKILL.md"
    assert match in rejection.reason


def test_skill_folder_without_skill_md_is_rejected(deploy: Deployment) -> None:
    (deploy.base / "skills" / "empty").mkdir(parents=True)
    (rejection,) = deploy.build().rejections
    assert "missing SKILL.md" in rejection.reason


def test_duplicate_skill_ids_differing_in_case(deploy: Deployment) -> None:
    deploy.write("skills/Calc/SKILL.md", "---\ndescription: one\n---\n")
    deploy.write("skills/calc/SKILL.md", "---\ndescription: two\n---\n")
    catalog = deploy.build()
    assert catalog.skills["calc"].description == "one"
    assert "duplicate skill id 'calc'" in catalog.rejections[0].reason


def test_split_front_matter_keeps_body() -> None:
    meta, body = split_front_matter("---\nname: a\n---\nline\n---\nmore\n")
    assert meta == {"name": "a"} and body == "line\n---\nmore"


def test_front_matter_error_names_line() -> None:
    with pytest.raises(DefinitionError, match="line 3"):
        split_front_matter("---\nname: a\n\tdescription: x\n---\n")


@pytest.mark.parametrize(
    ("file", "kind"),
    [("v.qlc", "qlc"), ("v.dqlc", "qlc"), ("v.json_schema", "json_schema"), ("v.custom", "custom")],
)
def test_json_viewports(deploy: Deployment, file: str, kind: str) -> None:
    deploy.write(f"viewports/{file}", '{"form": [1, 2], // comment\n}')
    catalog = deploy.build()
    viewport = catalog.viewports["v"]
    assert viewport.type == kind and dict(viewport.data) == {"form": [1, 2]}


def test_html_viewport(deploy: Deployment) -> None:
    deploy.write("viewports/show_weather_card.html", "<div>{{city}}</div>")
    viewport = deploy.build().viewports["show_weather_card"]
    assert viewport.type == "html" and dict(viewport.data) == {"html": "<div>{{city}}</div>"}


@pytest.mark.parametrize("content", ["[1, 2]", "{ broken", '"text"'])
def test_non_object_json_viewport_is_rejected(deploy: Deployment, content: str) -> None:
    deploy.write("viewports/bad.qlc", content)
    deploy.write("viewports/good.custom", "{}")
    catalog = deploy.build()
    assert list(catalog.viewports) == ["good"]
    assert catalog.rejections[0].kind == "viewport" and catalog.rejections[0].file == "viewports/bad.qlc"


def test_duplicate_viewport_key_keeps_first(deploy: Deployment) -> None:
    deploy.write("viewports/card.html", "<p/>")
    deploy.write("viewports/card.qlc", "{}")
    catalog = deploy.build()
    assert catalog.viewports["card"].type == "html"
    assert "duplicate viewport key 'card'" in catalog.rejections[0].reason


def test_symlink_out_of_the_folder_is_rejected(deploy: Deployment) -> None:
    secret = deploy.write("secret.html", "<p>secret</p>")
    deploy.write("viewports/inside.html", "<p>ok</p>")
    os.symlink(secret, deploy.base / "viewports" / "evil.html")
    os.symlink(deploy.base / "viewports" / "inside.html", deploy.base / "viewports" / "alias.html")
    catalog = deploy.build()
    assert set(catalog.viewports) == {"inside", "alias"}
    (rejection,) = catalog.rejections
    assert rejection.file == "viewports/evil.html" and "outside" in rejection.reason


def test_attack_fifo_under_a_viewport_name_is_rejected_without_blocking_the_build(deploy: Deployment) -> None:
    """``viewports/evil.html`` as a FIFO: opening it blocked until something wrote to it, and the
    catalog build with it (on a real gateway: no start, and no hot reload after). A writer waits
    on the FIFO here so that the old code gets unblocked (and loads what it wrote) instead of
    hanging the suite; the build must refuse the FIFO whatever it holds."""
    deploy.write("viewports/inside.html", "<p>ok</p>")
    fifo = deploy.base / "viewports" / "evil.html"
    os.mkfifo(fifo)

    def writer() -> None:
        try:
            with open(fifo, "w", encoding="utf-8") as pipe:  # waits for a reader
                pipe.write("<p>from the pipe</p>")
        except OSError:  # the reader already closed it
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        catalog = deploy.build()
    finally:
        while thread.is_alive():  # release the writer if it still waits (or has not reached its open yet)
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            thread.join(0.01)
    assert set(catalog.viewports) == {"inside"}
    (rejection,) = catalog.rejections
    assert rejection.file == "viewports/evil.html" and "not a regular file" in rejection.reason


def test_unknown_suffixes_are_ignored(deploy: Deployment) -> None:
    deploy.write("viewports/readme.md", "x")
    deploy.write("viewports/.draft.html", "x")
    catalog = deploy.build()
    assert catalog.viewports == {} and catalog.rejections == ()
