"""The expression languages of GRAPH agents (SPEC §21), compiled when the agent loads.

Two small languages, both parsed at load time (a file whose template or condition does not
parse is rejected with the reason) and evaluated by a library, never by ``eval``:

* **Templates** — ``"Write about ${inputs.topic} using ${state.notes}"``. Each ``${…}`` is a
  JMESPath expression (the ``jmespath`` package) over ``{inputs, state, message}``; its first
  name must be one of those three. A string that is exactly one ``${…}`` keeps the value's
  type (an object stays an object); inside text a value is written as itself (strings), as
  nothing (null) or as JSON (anything else). ``$${`` writes a literal ``${``.
  ``Query`` is a bare JMESPath expression (a tool node's ``outputs`` over the tool result).
* **Expressions** — edge ``condition`` and node ``update`` values:
  ``state.review.passed == true && state.rounds < 3``, ``state.rounds + 1``. The syntax is
  Python's expression grammar with the C/CEL spellings ``&&``, ``||``, ``!``, ``true``,
  ``false`` and ``null`` accepted too, restricted at load time to: literals, the names
  ``inputs``/``state``/``message``, member access (``a.b``) and indexing (``a[0]``,
  ``a["k"]``), arithmetic, comparisons (``in`` too), ``and``/``or``/``not``, ``x if c else y``,
  list literals and the functions of ``FUNCTIONS``. Evaluation runs on ``simpleeval``.
  Reading a missing key or a member of null gives null (so ``state.review.passed`` is null
  before the review ran); anything else that cannot be computed (``null < 3``) is an
  ``ExpressionError``.

Everything here is pure: compiled objects are immutable and hold no run state.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
import orjson
from jmespath.exceptions import JMESPathError
from jmespath.functions import Functions
from simpleeval import EvalWithCompoundTypes, InvalidExpression

from app.errors import DefinitionError

#: the names a template or expression may start from
SCOPE_NAMES: frozenset[str] = frozenset({"inputs", "state", "message"})
#: how deeply an expression's syntax tree may nest (evaluation recurses once per level)
MAX_EXPRESSION_DEPTH = 100
#: bounds of one expression's result: values (list items, object members, scalars), characters of
#: text (strings and keys) and nesting; past one the expression fails (``ExpressionError``)
MAX_RESULT_ELEMENTS = 100_000
MAX_RESULT_CHARS = 1_000_000
MAX_RESULT_DEPTH = 64
#: the integers a result may be: what the checkpoint writer (orjson) stores
INT_RANGE = (-(2**63), 2**64 - 1)


class ExpressionError(Exception):
    """A template, query or expression that could not be evaluated (not a parse error)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- JMESPath

_LEFT_ONLY = frozenset({"subexpression", "index_expression", "projection", "value_projection",
                        "filter_projection", "flatten", "pipe"})
_ALL_CHILDREN = frozenset({"function_expression", "or_expression", "and_expression", "not_expression",
                           "comparator", "multi_select_list", "multi_select_dict", "key_val_pair"})


def _jmespath_functions() -> frozenset[str]:
    return frozenset(getattr(Functions, "FUNCTION_TABLE", {}))


def _roots(node: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The scope names an expression starts from, each with the field read right after it."""
    kind = node.get("type")
    children = node.get("children") or []
    if kind == "field":
        return [(str(node.get("value")), None)]
    if kind in _LEFT_ONLY and children:
        found = _roots(children[0])
        if kind == "subexpression" and len(found) == 1 and found[0][1] is None and children[0].get("type") == "field":
            second = children[1] if len(children) > 1 else None
            if second is not None and second.get("type") == "field":
                return [(found[0][0], str(second.get("value")))]
        return found
    if kind in _ALL_CHILDREN:
        return [root for child in children for root in _roots(child)]
    return []


def _functions_of(node: Mapping[str, Any]) -> list[str]:
    names = [str(node.get("value"))] if node.get("type") == "function_expression" else []
    for child in node.get("children") or []:
        if isinstance(child, Mapping):
            names += _functions_of(child)
    return names


def _compile_jmespath(source: str, where: str) -> Any:
    try:
        compiled = jmespath.compile(source)
    except JMESPathError as exc:
        reason = " ".join(str(exc).split())
        raise DefinitionError(f"{where}: '{source}' is not a valid JMESPath expression ({reason})") from None
    known = _jmespath_functions()
    for name in _functions_of(compiled.parsed):
        if known and name not in known:
            raise DefinitionError(f"{where}: unknown JMESPath function '{name}()' in '{source}'")
    return compiled


def _search(compiled: Any, source: str, data: Any) -> Any:
    try:
        return compiled.search(data)
    except JMESPathError as exc:
        raise ExpressionError(f"'{source}' failed: {' '.join(str(exc).split())}") from None


@dataclass(frozen=True, slots=True, eq=False)
class Query:
    """A bare JMESPath expression (e.g. a tool node's ``outputs`` value over the tool result)."""

    source: str
    compiled: Any

    def search(self, data: Any) -> Any:
        return _search(self.compiled, self.source, data)


def compile_query(source: str, where: str) -> Query:
    if not source.strip():
        raise DefinitionError(f"{where}: the JMESPath expression is empty")
    return Query(source, _compile_jmespath(source, where))


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """A string with ``${…}`` JMESPath placeholders over ``{inputs, state, message}``."""

    source: str
    #: literal text and queries, in order
    parts: tuple[str | Query, ...]

    def render(self, scope: Mapping[str, Any]) -> Any:
        """The value of a lone ``${…}``, else the text with every placeholder filled in."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Query):
            return self.parts[0].search(scope)
        return "".join(part if isinstance(part, str) else as_text(part.search(scope)) for part in self.parts)

    def render_text(self, scope: Mapping[str, Any]) -> str:
        return as_text(self.render(scope))


def as_text(value: Any) -> str:
    """How a value reads inside text: strings as they are, null as nothing, the rest as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _placeholder_end(text: str, start: int) -> int:
    """The index of the ``}`` closing the placeholder whose expression starts at ``start``, or -1.

    Braces of JMESPath multi-select hashes nest; quoted identifiers, raw strings and JSON
    literals (``"…"``, ``'…'``, `` `…` ``) may contain braces and are skipped.
    """
    depth = 0
    quote: str | None = None
    index = start
    while index < len(text):
        char = text[index]
        if quote is not None:
            if char == "\\":
                index += 2
                continue
            if char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return index
            depth -= 1
        index += 1
    return -1


def compile_template(text: str, where: str, *, inputs: Collection[str] | None = None) -> Template:
    """Parse ``text``; every placeholder must parse and start from ``inputs``, ``state`` or
    ``message`` (and name a declared input, when ``inputs`` lists them)."""
    parts: list[str | Query] = []
    literal: list[str] = []
    index = 0
    while index < len(text):
        found = text.find("${", index)
        if found < 0:
            literal.append(text[index:])
            break
        if found > 0 and text[found - 1] == "$":  # "$${" is a literal "${"
            literal.append(text[index:found - 1] + "${")
            index = found + 2
            continue
        literal.append(text[index:found])
        end = _placeholder_end(text, found + 2)
        if end < 0:
            raise DefinitionError(f"{where}: unterminated '${{' at character {found + 1} of the template")
        source = text[found + 2:end].strip()
        if not source:
            raise DefinitionError(f"{where}: empty '${{}}' at character {found + 1} of the template")
        compiled = _compile_jmespath(source, where)
        for root, field in _roots(compiled.parsed):
            if root not in SCOPE_NAMES:
                raise DefinitionError(
                    f"{where}: '${{{source}}}' reads '{root}'; a template reads inputs.…, state.… or message")
            if root == "inputs" and inputs is not None and field is not None and field not in inputs:
                raise DefinitionError(f"{where}: '${{{source}}}' reads the undeclared input '{field}'")
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(Query(source, compiled))
        index = end + 1
    if literal and "".join(literal):
        parts.append("".join(literal))
    return Template(text, tuple(parts))


@dataclass(frozen=True, slots=True, eq=False)
class ValueTemplate:
    """A JSON value (e.g. a tool node's ``params``) whose strings are templates."""

    value: Any

    def render(self, scope: Mapping[str, Any]) -> Any:
        return _render_value(self.value, scope)


def _render_value(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(scope)
    if isinstance(value, dict):
        return {key: _render_value(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_value(item, scope) for item in value]
    return value


def compile_value(value: Any, where: str, *, inputs: Collection[str] | None = None) -> ValueTemplate:
    def walk(item: Any, path: str) -> Any:
        if isinstance(item, str):
            return compile_template(item, path, inputs=inputs) if "${" in item else item
        if isinstance(item, dict):
            return {key: walk(child, f"{path}.{key}") for key, child in item.items()}
        if isinstance(item, list):
            return [walk(child, f"{path}[{n}]") for n, child in enumerate(item)]
        return item

    return ValueTemplate(walk(value, where))


# --------------------------------------------------------------------------- expressions


def _has(value: Any) -> bool:
    return value is not None


def _lower(value: Any) -> str:
    return str(value).lower()


def _upper(value: Any) -> str:
    return str(value).upper()


#: the functions an expression may call
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "len": len, "int": int, "float": float, "str": str, "bool": bool, "abs": abs, "min": min, "max": max,
    "round": round, "lower": _lower, "upper": _upper, "has": _has,
}
_CONSTANTS = {"true": "True", "false": "False", "null": "None"}
_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp, ast.Add,
    ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.In, ast.NotIn, ast.IfExp, ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Subscript,
    ast.List, ast.Tuple, ast.Call,
)


def _bridge(source: str) -> str:
    """Rewrite the C/CEL spellings (``&&``, ``||``, ``!``, ``true``/``false``/``null``) into Python's,
    outside string literals; identifiers right after a ``.`` (member names) are left alone."""
    out: list[str] = []
    last = ""  # the last character written that is not white space
    index = 0
    while index < len(source):
        char = source[index]
        if out and out[-1].strip():
            last = out[-1].strip()[-1]
        if char in "\"'":
            end = index + 1
            while end < len(source) and source[end] != char:
                end += 2 if source[end] == "\\" else 1
            out.append(source[index:end + 1])
            index = end + 1
        elif source.startswith("&&", index):
            out.append(" and ")
            index += 2
        elif source.startswith("||", index):
            out.append(" or ")
            index += 2
        elif char == "!" and not source.startswith("!=", index):
            out.append(" not ")
            index += 1
        elif char.isalpha() or char == "_":
            end = index
            while end < len(source) and (source[end].isalnum() or source[end] == "_"):
                end += 1
            word = source[index:end]
            out.append(word if last == "." else _CONSTANTS.get(word, word))
            index = end
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _check_tree(tree: ast.AST, source: str, where: str) -> None:
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise DefinitionError(f"{where}: '{source}' uses {type(node).__name__}, which expressions do not allow")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                shown = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise DefinitionError(f"{where}: '{source}' calls '{shown}()'; expressions may call only "
                                      f"{', '.join(sorted(FUNCTIONS))} (positional arguments)")
        elif isinstance(node, ast.Name):
            if id(node) not in called and node.id not in SCOPE_NAMES:
                raise DefinitionError(f"{where}: '{source}' reads '{node.id}'; expressions read inputs.…, "
                                      "state.… or message")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise DefinitionError(f"{where}: '{source}' reads '.{node.attr}'; names starting with _ are not allowed")
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, int, float, bool, type(None))):
            raise DefinitionError(f"{where}: '{source}' holds a literal of type {type(node.value).__name__}")


@dataclass(frozen=True, slots=True, eq=False)
class Expression:
    """A compiled condition / update expression (see the module docstring)."""

    source: str
    tree: ast.expr

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        evaluator = _Evaluator(scope)
        try:
            value = evaluator.eval(self.source, previously_parsed=self.tree)
        except ExpressionError as exc:
            raise ExpressionError(f"'{self.source}' failed: {exc.message}") from None
        except (InvalidExpression, TypeError, ValueError, ArithmeticError, KeyError, IndexError) as exc:
            raise ExpressionError(f"'{self.source}' failed: {exc}") from None
        except (RecursionError, MemoryError):
            raise ExpressionError(f"'{self.source}' failed: the values are nested too deeply") from None
        try:
            return _ResultBudget().plain(value)
        except ExpressionError as exc:
            raise ExpressionError(f"'{self.source}' failed: {exc.message}") from None

    def test(self, scope: Mapping[str, Any]) -> bool:
        return bool(self.evaluate(scope))


class _ResultBudget:
    """Turns a result into a plain JSON value (tuples become lists) and bounds it.

    A result goes into the state, the checkpoints and the next visit's scope, so it must be JSON
    the checkpoint writer can store (an int beyond 64 bits, NaN or inf is not) and small: a list
    literal can repeat a value (``[state.l, state.l]`` doubles it on every visit), so elements
    and characters are counted as they are converted and the walk stops at the first limit."""

    def __init__(self) -> None:
        self.elements = 0
        self.chars = 0

    def plain(self, value: Any, depth: int = 0) -> Any:
        self.elements += 1
        if self.elements > MAX_RESULT_ELEMENTS:
            raise ExpressionError(f"the result has more than {MAX_RESULT_ELEMENTS} values")
        if depth > MAX_RESULT_DEPTH:
            raise ExpressionError(f"the result nests more than {MAX_RESULT_DEPTH} levels deep")
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            self._count(len(value))
            return value
        if isinstance(value, int):
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise ExpressionError("the result is an integer outside the 64-bit range a state value may hold")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ExpressionError(f"the result is {value}, which is not a JSON number")
            return value
        if isinstance(value, tuple | list):
            return [self.plain(item, depth + 1) for item in value]
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ExpressionError(f"the result has a key of type {type(key).__name__}")
                self._count(len(key))
                out[key] = self.plain(item, depth + 1)
            return out
        raise ExpressionError(f"the result is a {type(value).__name__}, which is not a JSON value")

    def _count(self, chars: int) -> None:
        self.chars += chars
        if self.chars > MAX_RESULT_CHARS:
            raise ExpressionError(f"the result holds more than {MAX_RESULT_CHARS} characters of text")


def _mod(left: Any, right: Any) -> Any:
    """``%`` on numbers only: printf-style formatting (``'%400000000d' % 1``) builds text of any size
    from a tiny expression, past simpleeval's length checks on ``+`` and ``*``."""
    if isinstance(left, str | bytes):
        raise ExpressionError("'%' is the remainder of numbers here; text cannot be formatted with it")
    return operator.mod(left, right)


class _Evaluator(EvalWithCompoundTypes):
    """simpleeval over the graph scope, with null-safe member access and indexing on JSON values."""

    def __init__(self, scope: Mapping[str, Any]) -> None:
        super().__init__(functions=dict(FUNCTIONS), names={name: scope.get(name) for name in SCOPE_NAMES})
        self.operators[ast.Mod] = _mod
        self.nodes[ast.Attribute] = self._member
        self.nodes[ast.Subscript] = self._index

    def _member(self, node: ast.Attribute) -> Any:
        return _lookup(self._eval(node.value), node.attr)

    def _index(self, node: ast.Subscript) -> Any:
        return _lookup(self._eval(node.value), self._eval(node.slice))


def _lookup(container: Any, key: Any) -> Any:
    if container is None:
        return None
    if isinstance(container, Mapping):
        return container.get(key) if isinstance(key, str) else None
    if isinstance(container, list | str) and isinstance(key, int) and not isinstance(key, bool):
        return container[key] if -len(container) <= key < len(container) else None
    raise ExpressionError(f"cannot read [{key!r}] of a {type(container).__name__}")


def _shown(source: str) -> str:
    """An expression as a reason quotes it: cut after 120 characters."""
    return source if len(source) <= 120 else f"{source[:120]}…"


def _depth(tree: ast.AST) -> int:
    """How deeply ``tree`` nests (without recursion: the tree may be deep)."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    return deepest


def compile_expression(source: str, where: str) -> Expression:
    """Parse a condition or update expression; anything outside the allowed subset is refused."""
    if not source.strip():
        raise DefinitionError(f"{where}: the expression is empty")
    try:
        tree = ast.parse(_bridge(source).strip(), mode="eval")
    except SyntaxError as exc:
        raise DefinitionError(f"{where}: '{_shown(source)}' does not parse ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError) as exc:  # e.g. 1+1+…+1 nested past the parser's stack
        reason = "it is nested too deeply" if isinstance(exc, RecursionError | MemoryError) else str(exc)
        raise DefinitionError(f"{where}: '{_shown(source)}' does not parse ({reason})") from None
    depth = _depth(tree)
    if depth > MAX_EXPRESSION_DEPTH:
        raise DefinitionError(f"{where}: '{_shown(source)}' is nested {depth} levels deep; an expression may "
                              f"nest at most {MAX_EXPRESSION_DEPTH}")
    _check_tree(tree, source, where)
    return Expression(source, tree.body)


__all__ = [
    "FUNCTIONS",
    "SCOPE_NAMES",
    "Expression",
    "ExpressionError",
    "Query",
    "Template",
    "ValueTemplate",
    "as_text",
    "compile_expression",
    "compile_query",
    "compile_template",
    "compile_value",
]
