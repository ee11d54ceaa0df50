"""What a person sees on the terminal: the streamed answer, live decoding statistics, progress over a folder.

Answers go to stdout, everything else to stderr. The live panel (Rich) is shown only when stderr is a terminal
and --quiet is off; otherwise statistics are one plain line per video. When stdout is a terminal too, the answer
streams inside the live panel, and when it is complete the panel is paused (erased) while the header, the answer
and the statistics line are written: Rich redraws its panel by moving the cursor up over the lines it drew, so
anything written to the terminal behind its back would be overwritten. What stays on the screen is every answer,
whole. Control characters a model emits (escape sequences among them) are shown as U+FFFD on a terminal; pipes
and files get the answer as it is.
"""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .engine.stats import DENSE_ONLY, DecodeStats
from .records import Record


def for_terminal(text: str) -> str:
    """`text` with every control character but newline and tab replaced by U+FFFD: a model's output must not
    move the cursor or change the terminal's state."""
    return "".join("\ufffd" if unicodedata.category(c) == "Cc" and c not in "\n\t" else c for c in text)


def format_ratio(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def _without_name(name: str, message: str) -> str:
    """Video errors and warnings often start with the path already: "a.mp4: empty file" must not read twice."""
    return message[len(name) + 2 :] if message.startswith(name + ": ") else message


def stats_line(name: str, record: Record) -> str:
    """One plain line of a finished record, for stderr."""
    if record.error is not None:
        return f"stdcli: error: {name}: {_without_name(record.video, record.error['message'])}"
    prefill = record.timings["prefill_s"]
    parts = [
        f"{record.new_tokens} tokens",
        f"{record.frames} frames",
        f"{record.visual_tokens} visual tokens",
        f"prefill {format_ratio(prefill)}s",
        f"first token {format_ratio(record.timings['first_token_s'])}s",
        f"{format_ratio(record.tokens_per_s)} tok/s",
    ]
    drafted = record.gammas is not None and any(g != "0" for g in record.gammas)
    if record.mode == "std" and record.gammas is not None and not drafted:
        parts.append(DENSE_ONLY)
    if record.acceptance_rate is not None:
        parts.append(f"acceptance {record.acceptance_rate:.2f}")
        parts.append(f"accepted length {format_ratio(record.mean_accepted_length)}")
    if record.speedup_est is not None:
        parts.append(f"speedup {record.speedup_est:.2f}x (estimated)")
    elif drafted and not record.compare:
        parts.append("speedup not estimated: too little decoding to time")
    compare = record.compare
    if compare:
        same = "identical" if compare["identical"] else "DIFFERENT"
        if compare["decode_speedup"] is not None:
            low, high = compare["decode_speedup_range"]
            measured = (f"measured speedup {compare['decode_speedup']:.2f}x vs dense ({low:.2f}-{high:.2f}x over "
                        f"{compare['runs']} runs)")
            parts.append(f"{measured}, answers {same}")
        elif compare["note"] == DENSE_ONLY:  # said above
            parts.append(f"answers {same} to dense")
        else:
            parts.append(f"{compare['note']}, answers {same}")
    return f"{name}: " + ", ".join(parts)


def stats_table(stats: DecodeStats, mode: str, elapsed: float) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_row(
        Text(mode, style="bold cyan"),
        f"{stats.new_tokens} tokens",
        f"first token {format_ratio(stats.first_token_s, 's')}",
        f"{format_ratio(stats.tokens_per_s)} tok/s",
        f"acceptance {format_ratio(stats.acceptance_rate)}",
        f"accepted length {format_ratio(stats.mean_accepted_length)}",
        f"est. speedup {format_ratio(stats.speedup_est, 'x')}",
        f"{elapsed:.1f}s",
    )
    return table


class Display:
    def __init__(
        self,
        total: int,
        *,
        quiet: bool = False,
        stream_answers: bool = True,
        stdout: TextIO | None = None,
        console: Console | None = None,
        unit: str = "videos",
    ):
        self.stdout = stdout or sys.stdout
        # soft_wrap: a statistics or error line stays one line, whatever the width (a file has 80 columns for Rich)
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.quiet = quiet
        self.stream_answers = stream_answers
        self.total = total
        self.live_enabled = self.console.is_terminal and not quiet
        self.answer_in_panel = self.live_enabled and self.stdout.isatty()
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task(unit, total=total)  # what is counted: videos, or answers
        self.live: Live | None = None
        self.answer = ""
        self.started = time.perf_counter()
        self.mode = ""
        self.name = ""

    @staticmethod
    def live_possible(quiet: bool) -> bool:
        """Whether a Display made now would show the live panel (other progress output should then stay off)."""
        return not quiet and Console(stderr=True).is_terminal

    def __enter__(self) -> Display:
        if self.live_enabled:
            self._start_live()
        return self

    def _start_live(self) -> None:
        # a new Live each time: one restarted after stop() would erase as many lines upwards as it last drew
        self.live = Live(console=self.console, refresh_per_second=8, transient=True, redirect_stdout=False)
        self.live.start()

    def __exit__(self, exc_type, *exc) -> None:
        if self.live:
            self.live.stop()
        if exc_type is KeyboardInterrupt and self.answer and self.stream_answers and not self.answer_in_panel:
            self._write_stdout("\n")  # end the half-streamed answer's line

    def video_started(self, name: str, mode: str) -> None:
        self.name, self.mode, self.answer = name, mode, ""
        self.started = time.perf_counter()
        if self.stream_answers and self.total > 1 and not self.answer_in_panel:
            self._write_stdout(self._header())
        self._refresh(None)

    def text(self, delta: str, stats: DecodeStats | None) -> None:
        """New answer text and the statistics so far."""
        self.answer += delta
        if self.stream_answers and not self.answer_in_panel:
            self._write_stdout(delta)
        self._refresh(stats)

    def video_finished(self, record: Record, output: str | None) -> None:
        """`output` is what stdout gets for this video at the end (a JSON record), if anything."""
        failed = record.error is not None
        self.progress.advance(self.task)
        with self._paused():
            if self.stream_answers:
                if self.answer_in_panel:
                    self._write_stdout((self._header() if self.total > 1 else "") + self.answer)
                if not failed or self.answer:  # a failure after some streamed text still ends its line
                    self._write_stdout("\n")
            if output is not None:
                self._write_stdout(output + "\n")
            if failed or not self.quiet:  # errors are shown even with --quiet
                self._print(stats_line(self.name, record))
            if not self.quiet:
                for warning in record.warnings or ():
                    self._print(f"stdcli: warning: {self.name}: {_without_name(record.video, warning)}")
        self.answer = ""  # printed and finished
        self._refresh(None)

    def _header(self) -> str:
        return f"==> {self.name} <==\n"

    @contextmanager
    def _paused(self) -> Iterator[None]:
        """Stop the live panel (a transient one erases itself) while the block writes to the terminal, then draw
        it again below what was written; nothing to pause where stdout is not the panel's terminal."""
        if not (self.live and self.answer_in_panel):
            yield
            return
        self.live.stop()
        try:
            yield
        finally:
            self._start_live()

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def _write_stdout(self, text: str) -> None:
        self.stdout.write(for_terminal(text) if self.stdout.isatty() else text)
        self.stdout.flush()

    def _refresh(self, stats: DecodeStats | None) -> None:
        if not self.live:
            return
        parts = []
        if self.answer_in_panel and self.answer:
            parts.append(Text(for_terminal(self.answer)))
        if stats is not None:
            parts.append(stats_table(stats, self.mode, time.perf_counter() - self.started))
        if self.total > 1:
            parts.append(self.progress)
        self.live.update(Group(*parts))
