"""voxmeter's command line: one module per command group (measure, results, explore).

This is the one place that turns a user error into one stderr line and exit status 2: a
VoxmeterError, and click's usage errors (unknown option, bad value), which typer would
otherwise print as a multi-line panel. Ctrl-C exits 130; every finished repeat is already
committed to the store, one transaction each, so an interrupt never leaves a partial row.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

# the command groups register themselves on `app`, in the order `voxmeter --help` lists them
from voxmeter.cli import (
    compress,  # noqa: F401
    data,  # noqa: F401
    explore,  # noqa: F401
    measure,  # noqa: F401
    results,  # noqa: F401
    serve,  # noqa: F401
    stream,  # noqa: F401
)
from voxmeter.cli.common import app
from voxmeter.errors import VoxmeterError

__all__ = ["app", "main"]

INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT


# typer >= 0.20 vendors click (typer._click), older typers use click itself: take the classes
# from typer's own exceptions so either works
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _usage_line(e: UsageError) -> str:
    where = e.ctx.command_path + ": " if e.ctx is not None else ""
    return f"voxmeter: error: {where}{e.format_message()}".replace("\n", " ")


def main(argv: list[str] | None = None) -> None:
    try:
        rc = app(args=argv, prog_name="voxmeter", standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # `voxmeter results` alone: the group's help, as the user asked
            sys.exit(2)
        print(_usage_line(e), file=sys.stderr)
        sys.exit(2)
    except VoxmeterError as e:
        print(f"voxmeter: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        rc = INTERRUPTED
    if rc == INTERRUPTED:  # typer itself turns Ctrl-C into a silent Exit(130)
        print("voxmeter: interrupted; finished repeats are kept in the store", file=sys.stderr)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
