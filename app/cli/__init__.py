"""The ``agw`` command (SPEC §22), on Typer with Rich output.

``agw serve | sidecar | validate | init | chat | credentials set|list|delete | config-reference``.
``--dir`` and ``--log-level`` go before or after the sub-command. Logs go to stderr; stdout
carries a command's own output (or the sidecar's protocol). ``main(argv)`` returns the exit code:
0 ok, 1 a failed check or request, 2 a usage or configuration error (one line on stderr, never a
traceback), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from app import __version__
from app.cli.chat import chat
from app.cli.options import DirOption, LogLevelOption
from app.cli.scaffold import init
from app.cli.serve import serve
from app.cli.validate import validate
from app.composition import add_sidecar_command
from app.config_reference import render
from app.credentials.cli import add_credentials_command
from app.errors import ConfigError


def _version(value: bool) -> None:
    if value:
        print(f"agw {__version__}")
        raise typer.Exit(0)


def _root(
    dir: DirOption = None,
    log_level: LogLevelOption = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                         help="Print the version and exit.")] = False,
) -> None:
    """Agent Gateway: definition-driven streaming agents (JSON agents in, token-by-token SSE out)."""


def config_reference() -> None:
    """Print the configuration reference (docs/configuration.md) generated from the settings model."""
    print(render(), end="")


def build_app() -> typer.Typer:
    """The ``agw`` Typer application with every sub-command."""
    app = typer.Typer(name="agw", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_root)
    app.command("serve")(serve)
    add_sidecar_command(app)
    app.command("validate")(validate)
    app.command("init")(init)
    app.command("chat")(chat)
    add_credentials_command(app)
    app.command("config-reference")(config_reference)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``agw`` with ``argv`` (default: the process arguments); returns the exit code."""
    command = typer.main.get_command(build_app())
    try:
        result = command.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="agw",
                              standalone_mode=False)
    except typer.Abort:
        return 130
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(message, file=sys.stderr)  # ``agw`` alone: the help
        else:
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "agw"
            text = " ".join(message.split()).replace("Value error, ", "")
            print(f"{where}: error: {text}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except ConfigError as exc:
        print(f"agw: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


__all__ = ["build_app", "main"]
