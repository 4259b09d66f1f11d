"""The expression languages of GRAPH agents (SPEC §21): ``${…}`` JMESPath templates and the
condition / update expressions (simpleeval, never ``eval``). Pure functions: no gateway needed."""

from __future__ import annotations

from typing import Any

import pytest

from app.catalog.expressions import ExpressionError, compile_expression, compile_template, compile_value
from app.errors import DefinitionError

SCOPE: dict[str, Any] = {
    "inputs": {"topic": "tea", "n": 3},
    "state": {"draft": "Tea is old.", "review": {"passed": False, "feedback": "More"}, "rounds": 2,
              "tags": ["a", "b"], "true": "a key named true", "items": {"x": 1}},
    "message": "hello && goodbye",
}


@pytest.mark.parametrize(("source", "value"), [
    ("state.review.passed == false && state.rounds < 3", True),
    ("state.review.passed == true || state.rounds >= 3", False),
    ("!state.review.passed", True),
    ("state.rounds != 2", False),
    ("state.rounds + 1", 3),
    ("state.missing.deeper == null", True),  # members of null are null
    ("state.tags[0] in ['a', 'c'] and len(state.tags) == 2", True),
    ("state.tags[5]", None),
    ("state['items'].x", 1),  # a key named like a dict method is a key
    ("state.items.x", 1),
    ("state.true", "a key named true"),  # a member named true stays a member
    ("message == 'hello && goodbye'", True),  # operators inside strings are text
    ("has(state.review) and not has(state.nothing)", True),
    ("upper(inputs.topic) + '!'", "TEA!"),
    ("'long' if inputs.n > 2 else 'short'", "long"),
    ("[state.rounds, inputs.n]", [2, 3]),
    ("(state.rounds, 1)", [2, 1]),
])
def test_expressions_evaluate_over_the_graph_scope(source: str, value: Any) -> None:
    assert compile_expression(source, "test").evaluate(SCOPE) == value


@pytest.mark.parametrize("source", ["state.rounds < null", "state.draft - 1", "state.draft.x", "1 / 0"])
def test_an_expression_that_cannot_be_computed_is_an_expression_error(source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, "test").evaluate(SCOPE)
    assert source in caught.value.message


@pytest.mark.parametrize(("source", "reason"), [
    ("state.x ==", "does not parse"),
    ("", "the expression is empty"),
    ("topic == 1", "reads 'topic'"),
    ("open('/etc/passwd')", "calls 'open()'"),
    ("state.x.lower()", "calls 'state.x.lower()'"),
    ("max(state.a, key=len)", "positional arguments"),
    ("state._secret", "names starting with _"),
    ("{'a': 1}", "uses Dict"),
    ("{c for c in state}", "uses SetComp"),
    ("(x := 1)", "uses NamedExpr"),
    ("f'{state}'", "uses JoinedStr"),
    ("2 ** 999999", "uses Pow"),
    ("b'bytes'", "literal of type bytes"),
])
def test_expressions_outside_the_safe_subset_do_not_load(source: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_expression(source, "edge 1 condition")
    assert caught.value.message.startswith("edge 1 condition: ") and reason in caught.value.message


def test_a_lone_placeholder_keeps_its_type_and_text_placeholders_are_written_out() -> None:
    assert compile_template("${state.review}", "t").render(SCOPE) == {"passed": False, "feedback": "More"}
    assert compile_template("${inputs.n}", "t").render(SCOPE) == 3
    text = compile_template("n=${inputs.n} r=${state.review} none=[${state.nothing}] ok=${state.review.passed}", "t")
    assert text.render(SCOPE) == 'n=3 r={"passed":false,"feedback":"More"} none=[] ok=false'
    assert compile_template("price: $${inputs.n} is literal", "t").render(SCOPE) == "price: ${inputs.n} is literal"
    # braces of a JMESPath multi-select hash and inside literals are part of the placeholder
    assert compile_template("${ {t: inputs.topic, r: state.rounds} }", "t").render(SCOPE) == {"t": "tea", "r": 2}
    assert compile_template("${state.nothing || '}'}!", "t").render(SCOPE) == "}!"
    assert compile_template("${join(', ', state.tags)}", "t").render(SCOPE) == "a, b"
    assert compile_template("no placeholders", "t").render(SCOPE) == "no placeholders"


def test_params_are_a_json_value_whose_strings_are_templates() -> None:
    params = compile_value({"city": "${inputs.topic}", "n": 1, "list": ["${state.rounds}", "x"],
                            "deep": {"flag": True, "text": "r${state.rounds}"}}, "params")
    assert params.render(SCOPE) == {"city": "tea", "n": 1, "list": [2, "x"], "deep": {"flag": True, "text": "r2"}}


@pytest.mark.parametrize(("template", "reason"), [
    ("${", "unterminated"),
    ("${ }", "empty '${}'"),
    ("${state.}", "not a valid JMESPath expression"),
    ("${nope(state)}", "unknown JMESPath function 'nope()'"),
    ("${draft}", "reads 'draft'"),
    ("${inputs.topik}", "undeclared input 'topik'"),
])
def test_templates_that_do_not_parse_do_not_load(template: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_template(template, "node 'a' prompt", inputs=["topic", "n"])
    assert reason in caught.value.message


@pytest.mark.parametrize(("source", "reason"), [
    ("'%400000000d' % 1", "text cannot be formatted with it"),
    ("len('%.400000000f' % 1.5)", "text cannot be formatted with it"),
    ("state.big * state.big", "outside the 64-bit range"),
    ("-state.big * 2", "outside the 64-bit range"),
    ("float('nan')", "nan, which is not a JSON number"),
    ("float('inf') * -1", "-inf, which is not a JSON number"),
    ("[state.l, state.l]", "more than 100000 values"),
    ("[state.text, state.text, state.text]", "more than 1000000 characters"),
    ("[state.deep]", "nests more than 64 levels"),
])
def test_attack_expression_results_are_bounded_json(source: str, reason: str) -> None:
    """``%`` formatting built 400 MB from 30 bytes; results too big, deep or not JSON (an int past
    64 bits broke the checkpoint writer) fail the expression instead of the gateway."""
    deep: Any = []
    for _ in range(64):
        deep = [deep]
    scope = {"state": {"big": 2**63 - 1, "l": list(range(60_000)), "text": "x" * 400_000, "deep": deep}}
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, "test").evaluate(scope)
    assert caught.value.message.startswith(f"'{source}' failed: ") and reason in caught.value.message


def test_numbers_still_have_a_remainder() -> None:
    assert compile_expression("state.n % 7", "t").evaluate({"state": {"n": 23}}) == 2
    assert compile_expression("[state.n, 1.5]", "t").evaluate({"state": {"n": 2**64 - 1}}) == [2**64 - 1, 1.5]
