"""One progress reporter for long library work (pseudo-labelling, recovery training).

The caller's callback when it gives one (a CLI or a sweep drawing its own bar), else a
transient rich bar on stderr with a time estimate, disabled when stderr is not a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["advance_or_bar"]


@contextmanager
def advance_or_bar(
    progress: Callable[[str, int, int], object] | None,
    label: str,
    total: int,
    done: int = 0,
    describe: Callable[[int], str] | None = None,
) -> Iterator[Callable[[int], None]]:
    """Yields advance(i), i the count done so far: `progress(describe(i), i, total)` when
    `progress` is given (describe defaults to `label`), else a rich bar named `label`."""
    if progress is not None:
        yield lambda i: progress(describe(i) if describe else label, i, total)
        return
    import rich.progress as rp
    from rich.console import Console

    bar = rp.Progress(
        rp.TextColumn(label), rp.BarColumn(), rp.MofNCompleteColumn(),
        rp.TimeElapsedColumn(), rp.TimeRemainingColumn(), console=Console(stderr=True),
        transient=True, disable=not sys.stderr.isatty(),
    )  # fmt: skip
    with bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda i: bar.update(task, completed=i)
