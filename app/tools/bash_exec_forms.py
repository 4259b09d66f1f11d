"""The exec-capable forms of whitelisted commands (SPEC §14 "Policy fixes that hold with or
without the sandbox"): the one table of the ``_bash_`` policy's exec-capable forms.

A whitelisted command is harmless only as long as it does not start other programs nor
read or write files that the path check never saw. Many common tools can do both:
``find -exec``, ``sed`` ``e``/``w``/``r``, ``awk`` ``system()``/pipes/redirections, ``tar
--to-command``, wrappers (``env``, ``timeout``, ``xargs``…) and interpreters. Such a form is
refused unless the operator lists the command in ``agent.tools.bash.exec-capable-commands``
(the check itself lives in ``bash_policy``).

:func:`exec_capable_form` is pure: it looks at one simple command's argv and returns the
first exec-capable form it finds, or ``None``. Commands are matched by basename
(``/usr/bin/find`` is ``find``) and, failing that, without a trailing version
(``python3.12`` is ``python``). Where a tool's syntax is ambiguous, the reading that finds
a form wins: refusing something odd is better than missing a command.

* :data:`_ALWAYS` — commands that run other programs (or code) whatever their arguments;
* :data:`_BY_ARGUMENTS` — commands whose arguments decide, one small function each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExecForm:
    """One exec-capable form found in a command: what it is and what it can do."""

    form: str
    why: str


_RUNS = "runs another command"
_CODE = "runs code"
_SHELL_ESCAPE = "has shell escapes"
_WRITES = "writes files the path check did not see"
_READS = "reads files the path check did not see"
_NAMES = "reads file names the path check did not see"

#: commands that are exec-capable whatever their arguments
_ALWAYS: dict[str, str] = {
    # run a command built from their input / arguments
    "xargs": _RUNS, "parallel": _RUNS,
    "env": _RUNS, "timeout": _RUNS, "nice": _RUNS, "nohup": _RUNS, "stdbuf": _RUNS,
    "setsid": _RUNS, "chroot": _RUNS, "ionice": _RUNS, "taskset": _RUNS, "chrt": _RUNS,
    "prlimit": _RUNS, "setpriv": _RUNS, "time": _RUNS, "command": _RUNS, "builtin": _RUNS,
    "exec": _RUNS, "eval": _RUNS, "source": _RUNS, ".": _RUNS, "trap": _RUNS,
    "busybox": _RUNS, "sudo": _RUNS, "su": _RUNS, "doas": _RUNS, "runuser": _RUNS,
    "pkexec": _RUNS, "flock": _RUNS, "watch": _RUNS, "strace": _RUNS, "ltrace": _RUNS,
    "unshare": _RUNS, "nsenter": _RUNS, "script": _RUNS, "fakeroot": _RUNS,
    "systemd-run": _RUNS, "run-parts": _RUNS, "ssh-agent": _RUNS, "valgrind": _RUNS,
    "screen": _RUNS, "tmux": _RUNS, "at": _RUNS, "batch": _RUNS, "crontab": _RUNS,
    "make": "runs the commands of a makefile", "git": "runs hooks, aliases and helper commands",
    "ssh": _RUNS, "scp": _RUNS, "sftp": _RUNS,
    "dd": "reads and writes any file (if=/of=)",
    "cpio": _NAMES,
    # interpreters (with -c/-e or a script file alike)
    "python": _CODE, "pypy": _CODE, "perl": _CODE, "ruby": _CODE, "irb": _CODE,
    "node": _CODE, "nodejs": _CODE, "deno": _CODE, "bun": _CODE, "php": _CODE,
    "lua": _CODE, "luajit": _CODE, "bash": _CODE, "sh": _CODE, "dash": _CODE, "zsh": _CODE,
    "ksh": _CODE, "mksh": _CODE, "ash": _CODE, "csh": _CODE, "tcsh": _CODE, "fish": _CODE,
    "tclsh": _CODE, "wish": _CODE, "expect": _CODE, "Rscript": _CODE, "R": _CODE,
    "julia": _CODE, "java": _CODE, "jshell": _CODE, "groovy": _CODE, "scala": _CODE,
    "guile": _CODE, "racket": _CODE, "sbcl": _CODE, "ocaml": _CODE, "swift": _CODE,
    "erl": _CODE, "escript": _CODE, "elixir": _CODE, "pwsh": _CODE, "osascript": _CODE,
    "m4": _CODE, "dc": _CODE, "sqlite3": _CODE, "gdb": _CODE,
    # pagers and editors
    "less": _SHELL_ESCAPE, "more": _SHELL_ESCAPE, "most": _SHELL_ESCAPE, "pg": _SHELL_ESCAPE,
    "man": _SHELL_ESCAPE, "vi": _SHELL_ESCAPE, "vim": _SHELL_ESCAPE, "nvim": _SHELL_ESCAPE,
    "view": _SHELL_ESCAPE, "vimdiff": _SHELL_ESCAPE, "ex": _SHELL_ESCAPE, "ed": _SHELL_ESCAPE,
    "emacs": _SHELL_ESCAPE, "nano": _SHELL_ESCAPE,
}  # fmt: skip

_VERSION_SUFFIX = re.compile(r"^(?P<name>[A-Za-z][A-Za-z_-]*?)[0-9][0-9.]*$")


def exec_capable_form(argv: list[str]) -> ExecForm | None:
    """The first exec-capable form of one simple command (``argv[0]`` is the command word)."""
    name = os.path.basename(argv[0])
    versionless = _VERSION_SUFFIX.match(name)
    for key in (name, versionless.group("name") if versionless else None):
        if key is None:
            continue
        if key in _ALWAYS:
            return ExecForm(name, _ALWAYS[key])
        if key in _BY_ARGUMENTS:
            return _BY_ARGUMENTS[key](name, argv[1:])
    return None


# ---------------------------------------------------------------------------------
# helpers: options


def _long_name(arg: str) -> tuple[str, str | None]:
    """``--name=value`` → (``name``, ``value``); ``--name`` → (``name``, None)."""
    name, eq, value = arg[2:].partition("=")
    return name, (value if eq else None)


def _abbreviates(name: str, option: str) -> bool:
    """``--name`` may select ``--option`` (getopt_long accepts unambiguous abbreviations)."""
    return bool(name) and option.startswith(name)


def _options(args: list[str]) -> list[str]:
    """The option words (before ``--``)."""
    words: list[str] = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("-") and arg != "-":
            words.append(arg)
    return words


def _short_letters(arg: str, takes_value: str) -> str:
    """The option letters of a bundle ``-abc…``, up to and including the first letter that
    takes a value (the rest of the bundle is that value)."""
    letters: list[str] = []
    for ch in arg[1:]:
        letters.append(ch)
        if ch in takes_value:
            break
    return "".join(letters)


def _long_form(
    args: list[str], command: str, dangerous: dict[str, str], exact: frozenset[str] = frozenset()
) -> ExecForm | None:
    """A long option that names (or abbreviates) one of ``dangerous`` (option → why);
    ``exact`` are real options that are prefixes of a dangerous one."""
    for arg in _options(args):
        if not arg.startswith("--"):
            continue
        name, _value = _long_name(arg)
        if name in exact:
            continue
        for option, why in dangerous.items():
            if _abbreviates(name, option):
                return ExecForm(f"{command} --{option}", why)
    return None


def _short_form(args: list[str], command: str, dangerous: dict[str, str], takes_value: str) -> ExecForm | None:
    """A short option letter of ``dangerous`` (letter → why) in any bundle."""
    for arg in _options(args):
        if arg.startswith("--"):
            continue
        for letter in _short_letters(arg, takes_value):
            if letter in dangerous:
                return ExecForm(f"{command} -{letter}", dangerous[letter])
    return None


# ---------------------------------------------------------------------------------
# find

_FIND_ACTIONS: dict[str, str] = {
    "-exec": _RUNS, "-execdir": _RUNS, "-ok": _RUNS, "-okdir": _RUNS,
    "-fprintf": _WRITES, "-fprint": _WRITES, "-fprint0": _WRITES, "-fls": _WRITES,
    "-delete": "deletes files", "-files0-from": _NAMES,
}  # fmt: skip


def _find(command: str, args: list[str]) -> ExecForm | None:
    for arg in args:
        if arg in _FIND_ACTIONS:
            return ExecForm(f"{command} {arg}", _FIND_ACTIONS[arg])
    return None


# ---------------------------------------------------------------------------------
# sed


class _Unparsable(Exception):
    pass


def _sed(command: str, args: list[str]) -> ExecForm | None:
    scripts: list[str] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            operands.extend(args[i + 1 :])
            break
        if arg.startswith("--"):
            name, value = _long_name(arg)
            if _abbreviates(name, "file"):
                return ExecForm(f"{command} --file", "runs a script file the policy cannot check")
            if _abbreviates(name, "expression"):
                if value is None:
                    i += 1
                    value = args[i] if i < len(args) else ""
                scripts.append(value)
            elif _abbreviates(name, "line-length") and value is None:
                i += 1
        elif arg.startswith("-") and arg != "-":
            letters = _short_letters(arg, "efli")  # -i[SUFFIX]: the rest is the suffix
            if letters.endswith(("e", "f", "l")):
                value = arg[len(letters) + 1 :]
                if not value:
                    i += 1
                    value = args[i] if i < len(args) else ""
                if letters.endswith("f"):
                    return ExecForm(f"{command} -f", "runs a script file the policy cannot check")
                if letters.endswith("e"):
                    scripts.append(value)
        else:
            operands.append(arg)
        i += 1
    if not scripts and operands:
        scripts.append(operands[0])
    try:
        found = _sed_script_form("\n".join(scripts))
    except _Unparsable:
        return ExecForm(f"{command} script that cannot be analysed", "may run commands or reach files")
    return ExecForm(f"{command} {found[0]}", found[1]) if found else None


#: commands without an argument
_SED_PLAIN = frozenset("=dDgGhHnNpPxzF")


def _sed_script_form(script: str) -> tuple[str, str] | None:
    """Walk a (GNU) sed script the way sed compiles it; the first ``e``/``r``/``R``/``w``/``W``
    command or ``s///e``/``s///w`` flag. Anything it cannot read raises ``_Unparsable``."""
    n = len(script)
    p = 0

    def blanks(q: int) -> int:
        while q < n and script[q] in " \t":
            q += 1
        return q

    while True:
        while p < n and script[p] in " \t\n;":
            p += 1
        if p >= n:
            return None
        p = blanks(_sed_address(script, p))
        if p < n and script[p] == ",":
            p = blanks(_sed_address(script, blanks(p + 1), second=True))
        while p < n and script[p] == "!":
            p = blanks(p + 1)
        if p >= n:
            raise _Unparsable
        cmd = script[p]
        p += 1
        if cmd in "{}" or cmd in _SED_PLAIN:
            continue
        if cmd == "#":
            while p < n and script[p] != "\n":
                p += 1
        elif cmd in ":btT":
            p = blanks(p)
            while p < n and script[p] not in " \t\n;}#":
                p += 1
        elif cmd in "aic":
            while p < n and script[p] != "\n":
                p += 2 if script[p] == "\\" else 1
        elif cmd == "s":
            p = _sed_delimited(script, p, parts=2)
            while p < n:
                flag = script[p]
                if flag == "e":
                    return "s///e", _RUNS
                if flag == "w":
                    return "s///w", _WRITES
                if flag not in "gpiImM0123456789":
                    break
                p += 1
        elif cmd == "y":
            p = _sed_delimited(script, p, parts=2)
        elif cmd == "e":
            return "'e' command", _RUNS
        elif cmd in "wW":
            return f"'{cmd}' command", _WRITES
        elif cmd in "rR":
            return f"'{cmd}' command", _READS
        elif cmd in "lLqQ":
            p = blanks(p)
            while p < n and script[p].isdigit():
                p += 1
        elif cmd == "v":
            while p < n and script[p] not in "\n;":
                p += 1
        else:
            raise _Unparsable


def _sed_address(script: str, p: int, *, second: bool = False) -> int:
    n = len(script)
    if p >= n:
        return p
    ch = script[p]
    if ch.isdigit() or (second and ch in "+~"):
        p += 1
        while p < n and (script[p].isdigit() or script[p] == "~"):
            p += 1
        return p
    if ch == "$":
        return p + 1
    if ch == "/":
        p = _sed_delimited(script, p, parts=1)
    elif ch == "\\":
        p = _sed_delimited(script, p + 1, parts=1)
    else:
        return p
    while p < n and script[p] in "IM":
        p += 1
    return p


def _sed_delimited(script: str, p: int, *, parts: int) -> int:
    """Skip ``<d>part<d>…`` starting at the delimiter; as GNU sed's ``match_slash``."""
    n = len(script)
    if p >= n or script[p] in "\n\\":
        raise _Unparsable
    delimiter = script[p]
    p += 1
    for _ in range(parts):
        while True:
            if p >= n or script[p] == "\n":
                raise _Unparsable
            if script[p] == "\\":
                p += 2
            elif script[p] == delimiter:
                p += 1
                break
            else:
                p += 1
    return p


# ---------------------------------------------------------------------------------
# awk

_AWK_FILE_OPTIONS: dict[str, str] = {
    "file": "runs a program file the policy cannot check",
    "include": "runs a program file the policy cannot check",
    "load": "loads a compiled extension",
    "exec": "runs a program file the policy cannot check",
}
_AWK_FILE_LETTERS: dict[str, str] = {"f": "file", "i": "include", "l": "load", "E": "exec"}
_AWK_PIPE_OR_REDIRECT = re.compile(r"[<>]")
_AWK_PRINT = re.compile(r"(?<![A-Za-z_])printf?")


def _has_pipe(text: str) -> bool:
    return "|" in text.replace("||", "")


def _awk(command: str, args: list[str]) -> ExecForm | None:
    texts: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            texts.extend(args[i + 1 :])
            break
        if arg.startswith("--"):
            name, value = _long_name(arg)
            for option, why in _AWK_FILE_OPTIONS.items():
                if _abbreviates(name, option):
                    return ExecForm(f"{command} --{option}", why)
            takes_value = any(_abbreviates(name, o) for o in ("source", "field-separator", "assign"))
            if takes_value and value is None:
                i += 1
                value = args[i] if i < len(args) else ""
            if _abbreviates(name, "source") and value is not None:
                texts.append(value)
        elif arg.startswith("-") and arg != "-":
            letters = _short_letters(arg, "fiElWeFvdDoLp")
            last = letters[-1]
            if last in _AWK_FILE_LETTERS:
                return ExecForm(f"{command} -{last}", _AWK_FILE_OPTIONS[_AWK_FILE_LETTERS[last]])
            if last == "W":
                return ExecForm(f"{command} -W", "takes extended options (program files, exec)")
            if last in "eFv":
                value = arg[len(letters) + 1 :]
                if not value:
                    i += 1
                    value = args[i] if i < len(args) else ""
                if last == "e":
                    texts.append(value)
        else:
            texts.append(arg)  # the program, files and var=value assignments: all looked at
        i += 1
    return _awk_program_form(command, "\n".join(texts))


def _awk_program_form(command: str, program: str) -> ExecForm | None:
    """Looks at the raw text (strings and regexes included: a false alarm is fine, a miss is not)."""
    if re.search(r"system[\s\\]*\(", program):
        return ExecForm(f"{command} system()", _RUNS)
    if "@" in program:
        return ExecForm(f"{command} @-directive or indirect call (@load, @include, @f())", _CODE)
    if "getline" in program and (_has_pipe(program) or "<" in program):
        return ExecForm(f"{command} getline from a command or file", "runs a command or " + _READS)
    printing = _AWK_PRINT.search(program)
    if printing:
        rest = program[printing.start() :]
        if _has_pipe(rest):
            return ExecForm(f"{command} print | command", _RUNS)
        if ">" in rest:
            return ExecForm(f"{command} print > file", _WRITES)
    if "ARGV" in program or "ARGC" in program:
        return ExecForm(f"{command} ARGV/ARGC", _READS)
    return None


# ---------------------------------------------------------------------------------
# archivers, downloaders, copiers

_TAR_LONG: dict[str, str] = {
    "checkpoint-action": _RUNS, "to-command": _RUNS, "use-compress-program": _RUNS,
    "rsh-command": _RUNS, "rmt-command": _RUNS, "info-script": _RUNS, "new-volume-script": _RUNS,
    "files-from": _NAMES,
}  # fmt: skip
_TAR_SHORT: dict[str, str] = {"I": _RUNS, "F": _RUNS, "T": _NAMES}
_TAR_VALUE_LETTERS = "bCfFgHIKLNTVX"


def _tar(command: str, args: list[str]) -> ExecForm | None:
    if args and not args[0].startswith("-"):  # old style: ``tar xIf prog a.tar``
        for letter in args[0]:
            if letter in _TAR_SHORT:
                return ExecForm(f"{command} {letter} (old-style option)", _TAR_SHORT[letter])
    found = _long_form(args, command, _TAR_LONG, exact=frozenset({"checkpoint", "file"}))
    found = found or _short_form(args, command, _TAR_SHORT, _TAR_VALUE_LETTERS)
    if found:
        return found
    if not any(_abbreviates(_long_name(o)[0], "force-local") for o in _options(args) if o.startswith("--")):
        for arg in args:
            if ":" in arg and not arg.startswith("--"):
                return ExecForm(f"{command} remote archive (host:file)", "runs a remote shell")
    return None


def _zip(command: str, args: list[str]) -> ExecForm | None:
    found = _long_form(args, command, {"test": _RUNS, "unzip-command": _RUNS, "names-stdin": _NAMES})
    if found:
        return found
    for arg in _options(args):
        if arg.startswith("--"):
            continue
        if "T" in arg:
            return ExecForm(f"{command} {'-TT' if 'TT' in arg else '-T'}", _RUNS)
        if "@" in arg:
            return ExecForm(f"{command} -@", _NAMES)
    return None


def _file_url(command: str, args: list[str]) -> ExecForm | None:
    for arg in args:
        if "file:" in arg.lower():
            return ExecForm(f"{command} file: URL", _READS)
    return None


def _curl(command: str, args: list[str]) -> ExecForm | None:
    found = _file_url(command, args)
    found = found or _long_form(args, command, {"config": "reads options from a file", "proto-default": _READS})
    found = found or _short_form(args, command, {"K": "reads options from a file"}, "")
    if found:
        return found
    options = _options(args)
    if any(o == "-g" or (o.startswith("--") and _abbreviates(_long_name(o)[0], "globoff")) for o in options):
        return None
    for arg in args:
        value = (_long_name(arg)[1] or "") if arg.startswith("--") else "" if arg.startswith("-") else arg
        if ":" in value and ("{" in value or "[" in value):
            return ExecForm(f"{command} URL globbing", "can form a file: URL (add -g/--globoff)")
    return None


_WGET_LONG: dict[str, str] = {
    "input-file": _NAMES,
    "execute": "runs .wgetrc commands",
    "config": "reads options from a file",
    "use-askpass": _RUNS,
}


def _wget(command: str, args: list[str]) -> ExecForm | None:
    found = _file_url(command, args) or _long_form(args, command, _WGET_LONG)
    return found or _short_form(args, command, {"i": _NAMES, "e": "runs .wgetrc commands"}, "eoaiBtOTwQPlARDIXUn")


def _rsync(command: str, args: list[str]) -> ExecForm | None:
    found = _long_form(args, command, {"rsh": _RUNS, "rsync-path": _RUNS, "files-from": _NAMES})
    found = found or _short_form(args, command, {"e": _RUNS}, "BefMT")
    if found:
        return found
    for arg in args:
        if ":" in arg and not arg.startswith("-"):
            return ExecForm(f"{command} remote (host:path)", "runs a remote shell")
    return None


def _sort(command: str, args: list[str]) -> ExecForm | None:
    return _long_form(args, command, {"compress-program": _RUNS, "files0-from": _NAMES})


def _split(command: str, args: list[str]) -> ExecForm | None:
    return _long_form(args, command, {"filter": _RUNS})


def _files0_from(command: str, args: list[str]) -> ExecForm | None:
    return _long_form(args, command, {"files0-from": _NAMES})


#: commands whose arguments decide (basename → check)
_BY_ARGUMENTS: dict[str, Callable[[str, list[str]], ExecForm | None]] = {
    "find": _find,
    "sed": _sed,
    "awk": _awk, "gawk": _awk, "mawk": _awk, "nawk": _awk, "original-awk": _awk,
    "tar": _tar,
    "zip": _zip,
    "curl": _curl,
    "wget": _wget,
    "rsync": _rsync,
    "sort": _sort,
    "split": _split,
    "wc": _files0_from, "du": _files0_from,
}  # fmt: skip
