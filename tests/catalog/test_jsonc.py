"""Relaxed definition JSON (SPEC §3, §3.2 triple-quoted prompts)."""

from __future__ import annotations

import pytest

from app.catalog.jsonc import dedent_block, loads, loads_object, preprocess
from app.errors import DefinitionError


def test_plain_json_is_unchanged() -> None:
    assert loads('{"a": [1, 2, {"b": null}]}') == {"a": [1, 2, {"b": None}]}


def test_line_comments_are_removed() -> None:
    text = '{\n  // a comment\n  "a": 1, // trailing\n  "b": 2\n}'
    assert loads(text) == {"a": 1, "b": 2}


def test_block_comments_are_removed() -> None:
    text = '{ /* one */ "a": /* two\n lines */ 1 }'
    assert loads(text) == {"a": 1}


def test_comment_markers_inside_strings_are_kept() -> None:
    text = '{"url": "http://example.com/a", "glob": "/* not a comment */", "q": "say \\"//hi\\""}'
    assert loads(text) == {"url": "http://example.com/a", "glob": "/* not a comment */", "q": 'say "//hi"'}


def test_trailing_commas_are_removed() -> None:
    assert loads('{"a": [1, 2, ], "b": {"c": 3,},}') == {"a": [1, 2], "b": {"c": 3}}


def test_trailing_comma_before_comment_and_bracket() -> None:
    assert loads('{"a": 1, // last\n}') == {"a": 1}


def test_commented_out_member_between_members() -> None:
    text = '{\n  "plan": {\n    // "deepThinking": true, // off\n    "systemPrompt": "x"\n  }\n}'
    assert loads(text) == {"plan": {"systemPrompt": "x"}}


def test_triple_quoted_system_prompt_is_dedented() -> None:
    text = '{\n  "systemPrompt": """\n      line one\n        indented\n\n      line three\n    """\n}'
    assert loads(text) == {"systemPrompt": "line one\n  indented\n\nline three"}


def test_triple_quoted_prompt_keeps_quotes_and_backslashes() -> None:
    text = '{"systemPrompt": """say "hi" \\ and C:\\path"""}'
    assert loads(text) == {"systemPrompt": 'say "hi" \\ and C:\\path'}


@pytest.mark.parametrize("key", ["systemPrompt", "planSystemPrompt", "SYSTEMPROMPT", "executeSystemprompt"])
def test_triple_quotes_allowed_for_any_system_prompt_key(key: str) -> None:
    assert loads(f'{{"{key}": """\n  x\n"""}}') == {key: "x"}


def test_triple_quotes_refused_for_other_keys() -> None:
    with pytest.raises(DefinitionError, match=r"line 2.*'description'"):
        loads('{\n "description": """x"""\n}')


def test_unterminated_triple_quote_names_the_line() -> None:
    with pytest.raises(DefinitionError, match=r"^line 3, column 18: unterminated"):
        loads('{\n "a": 1,\n "systemPrompt": """never closed\n}')


def test_line_numbers_survive_triple_quoted_blocks() -> None:
    text = '{\n "systemPrompt": """\n a\n b\n """,\n "x": oops\n}'
    with pytest.raises(DefinitionError, match=r"^line 6"):
        loads(text)
    assert preprocess(text).count("\n") == text.count("\n")


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(DefinitionError, match=r"^line 3, column \d+:"):
        loads('{\n  "a": 1,\n  "b" 2\n}')


def test_unterminated_block_comment() -> None:
    with pytest.raises(DefinitionError, match=r"^line 2, column 3: unterminated /\*"):
        loads('{\n  /* never closed\n}')


def test_unterminated_string() -> None:
    with pytest.raises(DefinitionError, match=r"^line 1, column 2: unterminated string"):
        loads('{"abc: 1}')


def test_bom_is_ignored() -> None:
    assert loads('\ufeff{"a": 1}') == {"a": 1}


def test_loads_object_refuses_arrays() -> None:
    with pytest.raises(DefinitionError, match="must be a JSON object"):
        loads_object("[1, 2]")


def test_dedent_block_drops_only_blank_edges() -> None:
    assert dedent_block("\n    a\n      b\n  ") == "a\n  b"
    assert dedent_block("inline") == "inline"
