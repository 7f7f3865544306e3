"""What the demo shows while it runs: one line per loop stage, progress bars, the pipeline's tasks.

The Kubeflow local runner prints every component's output; the demo sends that to a log file and
shows one line per pipeline task instead (parsed from the runner's ``Executing task`` / ``Task ...
finished`` lines), so the console stays readable and nothing is lost.
"""

from __future__ import annotations

import io
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")


class DemoConsole:
    """Stage lines with timings, and progress bars, on the terminal the demo started from."""

    def __init__(self, console: Console | None = None) -> None:
        # bound to the current stdout now: the pipeline stage redirects sys.stdout to a log file
        self.console = console or Console(file=sys.stdout, highlight=False)
        self.timings: dict[str, float] = {}
        self.failed_stage: str | None = None
        self.started = time.perf_counter()

    def say(self, text: str) -> None:
        """One line (rich markup allowed)."""
        self.console.print(text)

    @contextmanager
    def stage(self, number: int, title: str) -> Iterator[dict[str, Any]]:
        """``[n/9] title`` then ``done in X s: <detail>``; ``detail`` is filled in by the caller."""
        info: dict[str, Any] = {"detail": ""}
        self.console.print(f"\n[bold cyan][{number}/9] {title}[/bold cyan]")
        start = time.perf_counter()
        try:
            yield info
        except BaseException:
            self.console.print(f"[bold red]    failed after {time.perf_counter() - start:.1f} s[/bold red]")
            if self.failed_stage is None:  # the first stage that failed, for the failure report
                self.failed_stage = f"[{number}/9] {title}"
            raise
        elapsed = time.perf_counter() - start
        self.timings[title] = elapsed
        detail = f": {info['detail']}" if info["detail"] else ""
        self.console.print(f"    [green]done in {elapsed:.1f} s[/green]{detail}")

    def progress(self) -> Progress:
        """A rich progress display for counted work (decisions, training steps)."""
        return Progress(TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                        transient=False)

    @contextmanager
    def pipeline_log(self, path: Path) -> Iterator[None]:
        """Send stdout (the Kubeflow local runner's) to ``path``; show one line per pipeline task."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh, redirect_stdout(_TaskLines(fh, self)):
            yield


class _TaskLines(io.TextIOBase):
    """A stdout stand-in: every line goes to the log; task starts and ends go to the console."""

    def __init__(self, log: TextIO, console: DemoConsole) -> None:
        self.log = log
        self.demo = console
        self.buffer_text = ""
        self.started: dict[str, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self.buffer_text += text
        while "\n" in self.buffer_text:
            line, self.buffer_text = self.buffer_text.split("\n", 1)
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def _line(self, line: str) -> None:
        if match := _START.search(line):
            self.started[match.group(1)] = time.perf_counter()
            self.demo.say(f"    [dim]pipeline[/dim] {match.group(1)} ...")
        elif match := _END.search(line):
            task, status = match.groups()
            took = time.perf_counter() - self.started.get(task, time.perf_counter())
            color = "green" if status == "SUCCESS" else "red"
            self.demo.say(f"    [dim]pipeline[/dim] {task} [{color}]{status.lower()}[/{color}] ({took:.1f} s)")
