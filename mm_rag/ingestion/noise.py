"""What libraries print while files are read goes into the ingestion report, next to the file it concerns.

Decoders talk on the terminal: libmpg123 (inside libsndfile) writes ``Note: Illegal Audio-MPEG-Header …`` to
the process's stderr, pypdf logs ``Ignoring wrong pointing object``, Pillow and openpyxl warn. During an
ingestion run those lines would scatter over the progress bar without saying which file they belong to.
`Console` collects them per file instead:

- Python warnings and log records (when the application has configured no logging of its own) raised on a
  worker thread go to the file that thread is reading;
- C libraries write to file descriptor 2 directly, which only a process-wide redirection can catch: the
  decoders known to do so run inside `Console.c_output`, one at a time, with descriptor 2 pointing at a
  temporary file. The progress bar writes to its own copy of the terminal, so it is never caught.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Self, TextIO

_MAX_LINES = 5  # per file: the first lines say what is wrong; a broken file can print thousands


class _Router(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if not self.console.note(f"{record.name}: {record.getMessage()}"):
            logging.lastResort.handle(record)  # not a file's: printed as it would have been without us


class Console:
    """Collects library output per file during an ingestion run (a context manager around the run)."""

    def __init__(self) -> None:
        self._current = threading.local()
        self._c_lock = threading.Lock()
        self._router = _Router(self)
        self._showwarning: Any = None
        self._routing_logs = False
        self.terminal: TextIO | None = None

    def __enter__(self) -> Self:
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warning
        root = logging.getLogger()
        self._routing_logs = not root.handlers  # an application's own logging set-up is left to it
        if self._routing_logs:
            root.addHandler(self._router)
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no real stderr (a test's capture)
            sys.stderr.flush()
            self.terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        return self

    def __exit__(self, *exc_info: object) -> None:
        warnings.showwarning = self._showwarning
        if self._routing_logs:
            logging.getLogger().removeHandler(self._router)
        if self.terminal is not None:
            self.terminal.close()

    @contextlib.contextmanager
    def reading(self, lines: list[str]) -> Iterator[None]:
        """Library output on this thread goes to `lines` while the block runs (reading one file)."""
        previous = getattr(self._current, "lines", None)
        self._current.lines = lines
        try:
            yield
        finally:
            self._current.lines = previous

    @contextlib.contextmanager
    def c_output(self) -> Iterator[None]:
        """What C code writes to stderr during the block goes to the current file's lines (one block at a time)."""
        lines = getattr(self._current, "lines", None)
        if lines is None or self.terminal is None:
            yield
            return
        with self._c_lock, tempfile.TemporaryFile() as caught:
            saved = os.dup(2)
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                for line in caught.read(1 << 16).decode("utf-8", errors="replace").splitlines():
                    self._add(lines, line)

    def note(self, line: str) -> bool:
        """Add `line` to the file this thread is reading; False when it reads none."""
        lines = getattr(self._current, "lines", None)
        if lines is None:
            return False
        self._add(lines, line)
        return True

    def _add(self, lines: list[str], line: str) -> None:
        line = " ".join(line.split())
        if line and len(lines) < _MAX_LINES and line not in lines:
            lines.append(line)

    def _warning(self, message: Any, category: type[Warning], filename: str, lineno: int, *args: Any) -> None:
        if not self.note(f"{category.__name__}: {message}"):
            self._showwarning(message, category, filename, lineno, *args)


_active: Console | None = None


@contextlib.contextmanager
def c_output() -> Iterator[None]:
    """Around a call into a C decoder that prints to stderr: its lines go to the file being read, when an
    ingestion run collects them (`Console`); otherwise nothing changes."""
    console = _active
    if console is None:
        yield
        return
    with console.c_output():
        yield


@contextlib.contextmanager
def collecting() -> Iterator[Console]:
    """An ingestion run's `Console`, made the one `c_output` reports to (runs nest: the outer one collects)."""
    global _active
    if _active is not None:
        yield _active
        return
    with Console() as console:
        _active = console
        try:
            yield console
        finally:
            _active = None


def attach(outcome: Any, printed: list[str]) -> Any:
    """`outcome` (an `Extracted`, `Skip` or `Failure`) with what libraries printed while it was read."""
    if not printed:
        return outcome
    said = "library output: " + " | ".join(printed)
    if hasattr(outcome, "notes"):
        outcome.notes.append(said)
        return outcome
    return type(outcome)(f"{outcome.reason} ({said})")
