"""A progress callback shared by long-running commands: a rich bar on a terminal,
plain lines on stderr otherwise (a bar renders nothing into a pipe or a log until
the work is over)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

LINE_STEPS = 10     # without a terminal: a line at every tenth of each label's work


@contextmanager
def progress_bar():
    """Yields ``update(label, done, total)``; one bar (or line series) per label."""
    if not Console().is_terminal:
        yield _plain_lines()
        return
    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=False) as progress:
        def update(label: str, done: int, total: int) -> None:
            if label not in bars:
                bars[label] = progress.add_task(label, total=total)
            progress.update(bars[label], completed=done)
        yield update


def _plain_lines():
    shown: dict[str, int] = {}

    def update(label: str, done: int, total: int) -> None:
        step = LINE_STEPS * done // total if total else LINE_STEPS
        if shown.get(label, -1) < step:
            shown[label] = step
            print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)
    return update
