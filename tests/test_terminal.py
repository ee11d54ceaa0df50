"""stdcli in a real terminal: stdout and stderr on one pseudo-terminal of 160 x 40, the live panel drawn and erased
by Rich while answers stream. The bytes the terminal received are replayed through a terminal emulator (pyte), and
the screen it is left with, scrolled-off lines included, must hold every answer whole and every header, and
nothing of the panel."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from tests.test_cli import QUESTION, process_env

COLUMNS, ROWS = 160, 40


def run_in_terminal(arguments: list[str], timeout: float = 300) -> tuple[int, bytes]:
    """Run `python -m stdcli ARGUMENTS` with stdin, stdout and stderr on a new pseudo-terminal; (status, output)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = process_env() | {"TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)}
    child = subprocess.Popen([sys.executable, "-m", "stdcli", *arguments], stdin=terminal, stdout=terminal,
                             stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    output = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError as error:  # the terminal is closed once the child and its output are gone
                if error.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            output += chunk
        elif child.poll() is not None:
            break
    os.close(controller)
    return child.wait(timeout=30), bytes(output)


def final_rows(output: bytes) -> list[str]:
    """Every row the terminal shows at the end, COLUMNS wide, the ones scrolled off the top first."""
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=100_000, ratio=0.5)
    stream = pyte.ByteStream(screen)
    stream.feed(output.replace(b"\n", b"\r\n"))  # the line discipline adds the carriage return (onlcr)
    scrolled = ["".join(line[x].data for x in range(COLUMNS)) for line in screen.history.top]
    return scrolled + list(screen.display)


def final_screen(output: bytes, starts: tuple[str, ...]) -> list[str]:
    """The lines the terminal shows at the end. A line longer than the terminal fills rows up to the last column
    and goes on in the next: a row that does not begin like a line of this output (`starts`) is joined to the
    line before. Trailing blanks and the blank rows below the last text are dropped."""
    lines: list[str] = []
    for row in final_rows(output):
        if lines and lines[-1].rstrip() and not row.startswith(starts):
            lines[-1] += row
        else:
            lines.append(row)
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The five short samples: the built-in model answers them in real sentences, as a newcomer first sees."""
    folder = tmp_path_factory.mktemp("terminal")
    for i in range(1, 6):
        (folder / f"short_{i}.mp4").write_bytes((REPO / "samples" / f"short_{i}.mp4").read_bytes())
    return folder


def test_streamed_answers_stay_whole_on_the_screen(folder, tmp_path):
    log = tmp_path / "log.jsonl"
    status, output = run_in_terminal(["ask", str(folder), QUESTION, "--output", str(log)])
    assert status == 0, output.decode(errors="replace")[-2000:]
    assert b"\x1b[" in output  # Rich did draw a live panel (cursor and erase sequences)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    expected: list[str] = []
    for record in records:
        expected += [f"==> {record['video']} <==", record["answer"]]
    screen = final_screen(output, ("==> ", "The ", str(folder)))  # headers, the built-in model's answers, stats
    answers = [line for line in screen if not line.startswith(str(folder))]  # what is not a statistics line
    assert answers == expected, "\n".join(screen)
    stats = [line for line in screen if line.startswith(str(folder) + "/short_") and " tokens, " in line]
    assert len(stats) == len(records)  # one statistics line per video, none erased or doubled


def test_control_characters_of_a_model_never_reach_the_terminal():
    """A model's output is data: on a terminal its escape sequences and carriage returns are shown, not obeyed;
    pipes and files get the answer as it is."""
    import io

    from stdcli.display import Display, for_terminal

    answer = "red\x1b[2Jcircle\rmoves\tleft\nthen up\x07"
    assert for_terminal(answer) == "red\ufffd[2Jcircle\ufffdmoves\tleft\nthen up\ufffd"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stdout, shown in ((Terminal(), for_terminal(answer)), (io.StringIO(), answer)):
        display = Display(1, stdout=stdout)
        display.video_started("a.mp4", "std")
        display.text(answer, None)
        assert stdout.getvalue() == shown


def test_json_lines_stay_whole_on_the_screen(folder, tmp_path):
    status, output = run_in_terminal(["ask", str(folder), QUESTION, "--jsonl"])
    assert status == 0, output.decode(errors="replace")[-2000:]
    screen = final_screen(output, ('{"video"', str(folder)))
    text = "\n".join(screen)
    records = [json.loads(line) for line in screen if line.startswith("{")]
    stats = [line for line in screen if line.startswith(str(folder) + "/short_") and " tokens, " in line]
    assert len(screen) == len(records) + len(stats), text  # nothing else stays: no panel, no progress bar
    assert [r["video"] for r in records] == [str(folder / f"short_{i}.mp4") for i in range(1, 6)], text
    assert all(r["error"] is None and isinstance(r["answer"], str) for r in records)
