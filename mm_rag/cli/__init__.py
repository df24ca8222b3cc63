"""The `mm-rag` command: one module per group of commands, each with a `register(app)` function.

Heavy modules (torch, faiss, fastapi…) load inside each command, so ``mm-rag --help`` stays fast. Mistakes of
the user (a missing store, a malformed filter, an unknown option, an unreadable image…) end with one
``error: …`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import typer

try:  # typer ≥ 0.20 carries its own copy of click, whose exceptions all derive from this public class
    from typer import TyperException as CommandLineError
except ImportError:  # older typer raises click's own exceptions
    from click import ClickException as CommandLineError

from mm_rag.cli import agents, asking, building, ingesting, searching, serving, stores
from mm_rag.cli._common import EXIT_USAGE, error_line
from mm_rag.errors import MMRagError

app = typer.Typer(
    help="mm-rag: multimodal retrieval (images, audio, video, text) for LLM applications.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# Each module adds its commands; a new group of commands is a new module listed here.
for _module in (stores, ingesting, building, searching, asking, serving, agents):
    _module.register(app)


def main(args: list[str] | None = None) -> int:
    """Run the `mm-rag` command line; returns (and, as a script, exits with) the exit status."""
    try:
        status = app(args=args, standalone_mode=False)
    except CommandLineError as error:  # unknown option, missing argument, invalid value, file not found…
        if type(error).__name__ == "NoArgsIsHelpError":
            # `mm-rag` alone, or a group without a command: click raises the help it has shown, an answer, not
            # a mistake. Known by name: typer does not export that class (its click copy is private).
            typer.echo(error.format_message())
            status = 0
        else:
            error_line(error.format_message())
            status = EXIT_USAGE
    except typer.Abort:
        error_line("interrupted")
        status = 130
    except MMRagError as error:
        error_line(str(error))
        status = EXIT_USAGE
    return status if isinstance(status, int) else 0
