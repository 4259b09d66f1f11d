"""The ``_bash_`` command policy: what may run, checked before anything runs (SPEC §3.3, §9).

Pure functions, no I/O except resolving paths. Two modes:

* **strict** (default) — one simple command, executed *without* a shell:
  ``check_strict(command, policy) -> argv``.
* **shell** (``shell-features-enabled``) — pipes, ``&&``, ``||``, ``;``, newlines,
  redirects and here-docs, executed by ``shell-executable -c``:
  ``check_shell(command, policy) -> list[SimpleCommand]``.

Shell mode tokenizes with its own quote-aware lexer rather than ``shlex``: ``shlex``
removes quotes, so a quoted ``"<<"`` or ``";"`` comes out indistinguishable from the
operator, and a path argument could then be mistaken for a here-doc delimiter and
escape the path check. The lexer refuses every construct through which bash could run
or reach something the check did not see: command/process substitution, ``$``
expansions, backticks, subshells and groups, brace/tilde/glob expansion, background
``&``, comments. Every command word of every simple command must then be whitelisted,
and the arguments (for path-checked commands) and every redirect target must resolve —
after symlinks — inside the allowed paths.

In both modes every simple command is also checked for its exec-capable forms (SPEC §14:
``find -exec``, ``sed e``, ``awk system()``, ``xargs``, interpreters…; the table is
``bash_exec_forms``): refused unless the command is listed in ``exec_capable_commands``.
Path-checked arguments include values glued to options (``-Rf/etc/passwd``,
``--file=/x``) and ``name=value`` / ``@file`` words (``dd if=/x``, ``curl -d @/x``).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import ToolError
from app.tools.bash_exec_forms import exec_capable_form

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_FD = re.compile(r"^\d+$")
#: checked in this order so ``$(`` is reported as such, not as ``$``
_STRICT_OPERATORS: tuple[str, ...] = ("$(", "${", "`", ";", "|", "&", ">", "<")
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class BashPolicy:
    """The resolved ``agent.tools.bash`` settings."""

    working_directory: Path
    allowed_roots: tuple[Path, ...]
    allowed_commands: frozenset[str]
    path_checked_commands: frozenset[str]
    max_command_chars: int
    #: ``agent.tools.bash.exec-capable-commands``: may use their exec-capable forms (SPEC §14)
    exec_capable_commands: frozenset[str] = frozenset()


@dataclass(slots=True)
class SimpleCommand:
    """One simple command of a shell-mode command line, after the checks."""

    argv: list[str] = field(default_factory=list)
    redirect_targets: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------
# shared checks


def _check_common(command: str, policy: BashPolicy) -> None:
    if not isinstance(command, str) or not command.strip():
        raise ToolError("empty command")
    if len(command) > policy.max_command_chars:
        raise ToolError(
            f"command is too long ({len(command)} characters; the limit is {policy.max_command_chars})"
        )
    if "\x00" in command:
        raise ToolError("the command contains a NUL byte")


def _check_command_word(word: str, policy: BashPolicy) -> None:
    if _ASSIGNMENT.match(word):
        raise ToolError(f"environment assignment {word.split('=', 1)[0]!r}=… before a command is not allowed")
    if not policy.allowed_commands:
        raise ToolError("no commands are allowed (agent.tools.bash.allowed-commands is empty)")
    if word not in policy.allowed_commands:
        raise ToolError(f"command {word!r} is not in the allowed commands")


def check_path(arg: str, policy: BashPolicy) -> None:
    """``arg`` (relative to the working directory) must resolve, symlinks followed, inside an allowed root."""
    candidate = Path(os.path.expanduser(arg)) if arg.startswith("~") else Path(arg)
    if not candidate.is_absolute():
        candidate = policy.working_directory / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:
        raise ToolError(f"path {arg!r} cannot be resolved: {exc}") from exc
    for root in policy.allowed_roots:
        if resolved == root or root in resolved.parents:
            return
    raise ToolError(f"path {arg!r} is outside the allowed paths")


_NAME_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*=[@<]?(?P<value>.+)$", re.DOTALL)


#: the longest file name Linux file systems take (NAME_MAX): a longer name cannot exist
_NAME_MAX = 255


def _embedded_paths(word: str, seen: set[int]) -> Iterator[str]:
    """``word`` and the paths inside it: after a leading ``@`` (``curl -d @file``) and the
    value of ``name=value`` (``dd if=/x``, ``curl -F a=@/x``), nested (``a=@b=/x``). A loop,
    not recursion: a word of a few thousand ``@`` nests deeper than Python recurses.

    Every path found is a suffix of the argument ``word`` comes from, so its length names it:
    ``seen`` (lengths, per argument) skips one found before, with what it contains."""
    pending = [word]
    while pending:
        current = pending.pop()
        if len(current) in seen:
            continue
        seen.add(len(current))
        yield current
        match = _NAME_VALUE.match(current) if "=" in current else None
        if match:
            pending.append(match.group("value"))
        if current.startswith("@") and len(current) > 1:
            pending.append(current[1:])  # taken first, as the recursion did


def _bundle_values(arg: str) -> Iterator[str]:
    """Every value a short-option bundle ``-abcVALUE`` may carry: getopt ends the bundle at
    the first letter that takes a value, and which one does is the command's business, so
    each suffix after a run of possible option letters is a candidate (``-Rf/etc/passwd`` →
    ``f/etc/passwd``, ``/etc/passwd``; ``-n1`` → ``1``). ``/``, ``.`` and ``~`` are never
    option letters: a value begins at the latest where the first of them is (``-../x`` → ``../x``)."""
    first = next((j for j in range(1, len(arg)) if arg[j] in "/.~"), None)
    if first == 1:
        yield arg[1:]
        return
    end = len(arg) - 1 if first is None else first
    yield from (arg[j:] for j in range(2, end + 1))


def _path_like_parts(args: list[str]) -> Iterator[tuple[str, str | None]]:
    """The arguments that may name files, each with the option it was glued to (or None):
    plain words, ``--opt=value`` values, the candidate values of short-option bundles,
    everything after ``--``; and the paths embedded in each (``name=value``, ``@file``).
    Generated one at a time: a long bundle has as many candidates as letters."""
    options_done = False
    for arg in args:
        seen: set[int] = set()
        if options_done or not arg.startswith("-") or arg == "-":
            yield from ((path, None) for path in _embedded_paths(arg, seen))
        elif arg == "--":
            options_done = True
        elif arg.startswith("--"):
            value = arg.partition("=")[2]
            if value:
                yield from ((path, arg) for path in _embedded_paths(value, seen))
        else:
            for value in _bundle_values(arg):
                yield from ((path, arg) for path in _embedded_paths(value, seen))


def _missing_first_name(part: str, working_directory: Path) -> bool:
    """``part`` is relative and its first name does not exist in the working directory: it then
    resolves as text, following nothing until a ``..`` takes that name away again, so whether it
    stays inside depends only on what follows the first name."""
    if part.startswith(("/", "~")):
        return False
    slash = part.find("/")
    length = len(part) if slash < 0 else slash
    if length > _NAME_MAX:  # characters: at least as many bytes
        return True
    name = part[:length]
    if name in ("", ".", ".."):
        return False
    if len(name.encode("utf-8", "surrogatepass")) > _NAME_MAX:
        return True
    return not os.path.lexists(working_directory / name)


def _check_arguments(command_word: str, args: list[str], policy: BashPolicy) -> None:
    checked = policy.path_checked_commands or policy.allowed_commands
    if command_word not in checked:
        return
    # candidates that differ only in a missing first name resolve alike: one is checked for all
    # (a 16 KB bundle ``-aaa…/b/b/…`` is thousands of candidates, and resolving each one took
    # 37 s of the event loop)
    rests_checked: set[str] = set()
    for part, option in _path_like_parts(args):
        if _missing_first_name(part, policy.working_directory):
            rest = part.partition("/")[2]
            if rest in rests_checked:
                continue
            rests_checked.add(rest)
        if option is None:
            check_path(part, policy)
            continue
        try:
            check_path(part, policy)
        except ToolError as exc:
            raise ToolError(f"{exc} (a value glued to the option {option!r}; give it as a separate word)") from exc


def _check_exec_forms(argv: list[str], policy: BashPolicy) -> None:
    """Refuse an exec-capable form (SPEC §14) unless the command is listed in
    ``agent.tools.bash.exec-capable-commands`` (by its word or its basename)."""
    word = argv[0]
    if word in policy.exec_capable_commands or os.path.basename(word) in policy.exec_capable_commands:
        return
    found = exec_capable_form(argv)
    if found is not None:
        raise ToolError(
            f"the exec-capable form {found.form!r} is refused: it {found.why}; list {word!r} in "
            "agent.tools.bash.exec-capable-commands to allow it"
        )


def _check_simple_command(argv: list[str], policy: BashPolicy) -> None:
    """The checks of one simple command after its command word: exec-capable forms, paths."""
    _check_exec_forms(argv, policy)
    _check_arguments(argv[0], argv[1:], policy)


# ---------------------------------------------------------------------------------
# strict mode


def _unquoted_indices(command: str) -> list[int]:
    """Indices of characters that are neither quoted nor backslash-escaped (POSIX rules)."""
    indices: list[int] = []
    quote: str | None = None
    i = 0
    while i < len(command):
        ch = command[i]
        if quote == "'":
            if ch == "'":
                quote = None
        elif quote == '"':
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = None
        elif ch == "\\":
            i += 1
        elif ch in "'\"":
            quote = ch
        else:
            indices.append(i)
        i += 1
    return indices


def check_strict(command: str, policy: BashPolicy) -> list[str]:
    """Validate a strict-mode command and return its argv (run without a shell)."""
    _check_common(command, policy)
    if "\n" in command or "\r" in command:
        raise ToolError("newlines are not allowed in strict mode (one command per call)")
    for operator in _STRICT_OPERATORS:
        if operator in command:
            raise ToolError(f"shell operator {operator!r} is not allowed in strict mode")
    for i in _unquoted_indices(command):
        if command[i] in _GLOB_CHARS:
            raise ToolError(f"glob character {command[i]!r} is not allowed in strict mode (quote it)")
    try:
        argv = shlex.split(command, posix=True)
    except ValueError as exc:
        raise ToolError(f"cannot parse the command: {exc}") from exc
    if not argv:
        raise ToolError("empty command")
    _check_command_word(argv[0], policy)
    _check_simple_command(argv, policy)
    return argv


# ---------------------------------------------------------------------------------
# shell mode: lexer

_BLANKS = " \t"
_OPERATOR_CHARS = ";&|<>"
#: longest first
_OPERATORS: tuple[str, ...] = (
    "&>>", "<<<", "<<-", "&&", "||", ";;", ";&", "|&", "<<", ">>", "&>", ">&", "<&", "<>", ">|",
    ";", "&", "|", "<", ">",
)  # fmt: skip
_SEPARATORS = frozenset({";", "&&", "||", "|", "\n"})
_REDIRECTS = frozenset({"<", ">", ">>", "&>", "&>>", ">&", "<&", "<>", ">|"})
_HEREDOCS = frozenset({"<<", "<<-"})
_HERESTRING = "<<<"
#: redirect targets allowed although outside the allowed paths
_SAFE_TARGETS = frozenset({"/dev/null"})


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word" | "op"
    value: str
    #: the word had quoting (for here-doc delimiters: no expansion in the body)
    quoted: bool = False
    #: directly followed by the next token, without blanks (``2>``)
    glued: bool = False


@dataclass(slots=True)
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool


class _Lexer:
    """A POSIX-shell lexer for the subset shell mode accepts; refuses the rest."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.tokens: list[_Token] = []
        self.pending: list[_Heredoc] = []
        self.expect_delimiter: str | None = None

    def run(self) -> list[_Token]:
        text = self.text
        while self.i < len(text):
            ch = text[self.i]
            if ch in _BLANKS:
                self.i += 1
            elif ch == "\\" and text.startswith("\\\n", self.i):
                self.i += 2  # line continuation
            elif ch == "\n":
                self._newline()
            elif ch in _OPERATOR_CHARS:
                self._operator()
            elif ch in "()":
                raise ToolError(f"{ch!r} (subshells, groups, function definitions) is not allowed")
            elif ch == "#":
                raise ToolError("comments ('#') are not allowed")
            else:
                self._word()
        if self.expect_delimiter is not None:
            raise ToolError("here-document without a delimiter")
        if self.pending:
            raise ToolError(f"unterminated here-document (delimiter {self.pending[0].delimiter!r})")
        return self.tokens

    # -- pieces

    def _newline(self) -> None:
        if self.expect_delimiter is not None:
            raise ToolError("here-document without a delimiter")
        self.i += 1
        self.tokens.append(_Token("op", "\n"))
        for heredoc in self.pending:
            self._heredoc_body(heredoc)
        self.pending.clear()

    def _heredoc_body(self, heredoc: _Heredoc) -> None:
        text = self.text
        while True:
            if self.i >= len(text):
                raise ToolError(f"unterminated here-document (delimiter {heredoc.delimiter!r})")
            end = text.find("\n", self.i)
            line = text[self.i :] if end < 0 else text[self.i : end]
            self.i = len(text) if end < 0 else end + 1
            compare = line.lstrip("\t") if heredoc.strip_tabs else line
            if compare == heredoc.delimiter:
                return
            if not heredoc.quoted and ("$" in line or "`" in line or line.endswith("\\")):
                raise ToolError(
                    "'$', '`' and a trailing backslash are not allowed in a here-document with an "
                    "unquoted delimiter (quote the delimiter: <<'EOF')"
                )

    def _operator(self) -> None:
        text = self.text
        op = next(o for o in _OPERATORS if text.startswith(o, self.i))
        after = self.i + len(op)
        if op in ("<", ">") and after < len(text) and text[after] == "(":
            raise ToolError(f"process substitution {op}( is not allowed")
        if op == "&":
            raise ToolError("background execution ('&') is not allowed")
        if op not in _SEPARATORS and op not in _REDIRECTS and op not in _HEREDOCS and op != _HERESTRING:
            raise ToolError(f"shell operator {op!r} is not allowed")
        if self.expect_delimiter is not None:
            raise ToolError("here-document without a delimiter")
        self.i = after
        if op in _HEREDOCS:
            self.expect_delimiter = op
        self.tokens.append(_Token("op", op))

    def _word(self) -> None:
        text = self.text
        start = self.i
        value: list[str] = []
        quoted = False
        while self.i < len(text):
            ch = text[self.i]
            if ch in _BLANKS or ch == "\n" or ch in _OPERATOR_CHARS:
                break
            if ch in "()":
                raise ToolError(f"{ch!r} (subshells, groups, function definitions) is not allowed")
            if ch == "\\":
                quoted = True
                if self.i + 1 >= len(text):
                    raise ToolError("the command ends with a lone backslash")
                nxt = text[self.i + 1]
                if nxt != "\n":
                    value.append(nxt)
                self.i += 2
            elif ch == "'":
                quoted = True
                end = text.find("'", self.i + 1)
                if end < 0:
                    raise ToolError("unbalanced single quote")
                value.append(text[self.i + 1 : end])
                self.i = end + 1
            elif ch == '"':
                quoted = True
                self._double_quoted(value)
            else:
                self._check_unquoted(ch, at_start=self.i == start)
                value.append(ch)
                self.i += 1
        glued = self.i < len(text) and text[self.i] in _OPERATOR_CHARS
        word = "".join(value)
        if self.expect_delimiter is not None:
            self.pending.append(_Heredoc(word, quoted, self.expect_delimiter == "<<-"))
            self.expect_delimiter = None
        self.tokens.append(_Token("word", word, quoted=quoted, glued=glued))

    def _double_quoted(self, value: list[str]) -> None:
        text = self.text
        self.i += 1
        while self.i < len(text):
            ch = text[self.i]
            if ch == '"':
                self.i += 1
                return
            if ch == "\\" and self.i + 1 < len(text) and text[self.i + 1] in '$`"\\\n':
                if text[self.i + 1] != "\n":
                    value.append(text[self.i + 1])
                self.i += 2
                continue
            if ch in "$`":
                self._refuse_expansion(ch)
            value.append(ch)
            self.i += 1
        raise ToolError("unbalanced double quote")

    def _check_unquoted(self, ch: str, *, at_start: bool) -> None:
        if ch in "$`":
            self._refuse_expansion(ch)
        if ch in _GLOB_CHARS:
            raise ToolError(f"glob character {ch!r} is not allowed (quote it)")
        if ch in "{}":
            raise ToolError(f"{ch!r} (brace expansion, groups) is not allowed (quote it)")
        if ch == "~":
            raise ToolError("tilde expansion ('~') is not allowed (quote it or use a relative path)")
        if ch == "#" and at_start:
            raise ToolError("comments ('#') are not allowed")
        if ch == "\r":
            raise ToolError("carriage returns are not allowed")

    def _refuse_expansion(self, ch: str) -> None:
        nxt = self.text[self.i + 1 : self.i + 2]
        if ch == "`":
            raise ToolError("command substitution with backticks is not allowed")
        if nxt == "(":
            raise ToolError("command substitution '$(' is not allowed")
        if nxt == "{":
            raise ToolError("parameter expansion '${' is not allowed")
        raise ToolError("'$' expansions are not allowed (quote it with single quotes)")


# ---------------------------------------------------------------------------------
# shell mode: commands


def check_shell(command: str, policy: BashPolicy) -> list[SimpleCommand]:
    """Validate a shell-mode command line; return its simple commands (for logging/tests)."""
    _check_common(command, policy)
    if "\r" in command:
        raise ToolError("carriage returns are not allowed")
    tokens = _Lexer(command).run()
    commands: list[SimpleCommand] = []
    current = SimpleCommand()
    previous_separator: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.kind == "op" and token.value in _SEPARATORS:
            if not current.argv:
                if current.redirect_targets:
                    raise ToolError("a redirect without a command is not allowed")
                if token.value not in (";", "\n") or (previous_separator not in (None, ";", "\n")):
                    raise ToolError(f"shell operator {token.value!r} without a command before it")
            else:
                commands.append(current)
            current = SimpleCommand()
            previous_separator = token.value
            i += 1
            continue
        if token.kind == "op":
            i = _redirect(tokens, i, current, policy)
            continue
        # an fd number glued to a redirect (``2>``) is part of the redirect
        if token.glued and _FD.match(token.value) and not token.quoted and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            if nxt.kind == "op" and (nxt.value in _REDIRECTS or nxt.value in _HEREDOCS or nxt.value == _HERESTRING):
                i += 1
                continue
        if not current.argv:
            _check_command_word(token.value, policy)
        current.argv.append(token.value)
        i += 1
    if current.argv:
        commands.append(current)
    elif current.redirect_targets:
        raise ToolError("a redirect without a command is not allowed")
    elif previous_separator in ("|", "&&", "||"):
        raise ToolError(f"shell operator {previous_separator!r} without a command after it")
    if not commands:
        raise ToolError("empty command")
    for simple in commands:
        _check_simple_command(simple.argv, policy)
    return commands


def _redirect(tokens: list[_Token], i: int, current: SimpleCommand, policy: BashPolicy) -> int:
    op = tokens[i].value
    if i + 1 >= len(tokens) or tokens[i + 1].kind != "word":
        raise ToolError(f"redirect {op!r} without a target")
    target = tokens[i + 1].value
    if op in _HEREDOCS or op == _HERESTRING:
        return i + 2  # a delimiter / a literal string, not a file
    if op in (">&", "<&") and (_FD.match(target) or target == "-"):
        return i + 2  # fd duplication / closing
    if target not in _SAFE_TARGETS:
        check_path(target, policy)
    current.redirect_targets.append(target)
    return i + 2
