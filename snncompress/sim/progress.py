"""Progress bars on stderr (stdout stays parseable)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

stderr_console = Console(stderr=True)


class _Silent:
    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | _Silent]:
    """A rich progress bar on stderr, or a silent stand-in when disabled."""
    if not enabled:
        yield _Silent()
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=stderr_console, transient=True) as bar:
        original = bar.add_task

        def add_task(description: str, **kwargs):
            kwargs.setdefault("info", "")
            return original(description, **kwargs)

        bar.add_task = add_task  # every task gets the 'info' field the columns use
        yield bar
