"""`--resume`: which questions about which videos an output file already answers, and claims that let several runs
share one file.

A question about a video is answered when the file holds a successful record of the same file (its path resolved,
the record's `video_path`: "./a.mp4", "a.mp4" and "/data/a.mp4" are one video, whichever folder each run ran in;
`video` keeps the path as given), the same question (surrounding whitespace aside) and the same model name. Failed
records do not count: --resume asks those questions again.

Runs that resume into one file at the same time share the work: before a video is read, a run claims each of its
questions in FILE.claims (under an exclusive lock, after reading what the file answers by then); a question
answered, or claimed by a run that is still alive, is left to it. A claim of a run on another host counts for
CLAIM_HOURS (its process cannot be checked from here); delete FILE.claims to take such questions back sooner.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .inputs import VideoQuestions
from .records import locked

CLAIM_HOURS = 24.0
Key = tuple[str, str, str]


def record_key(video: str, question: str, model: str) -> Key:
    """What --resume matches: the video's resolved path, the question without surrounding whitespace, the model
    name."""
    return os.path.realpath(video), question.strip(), model


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of a JSONL file, and the numbers of the lines that are not one (a cut-off last line, say)."""
    records, bad = [], []
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def answered(records: Iterable[dict[str, Any]]) -> set[Key]:
    """The keys of the successful records (records written before `video_path` existed: their `video`, resolved
    from the working folder of this run)."""
    return {record_key(str(r.get("video_path") or r.get("video")), str(r.get("question")), str(r.get("model")))
            for r in records if not r.get("error")}


def line_ranges(numbers: list[int]) -> str:
    """[2, 3, 7] -> "lines 2-3, 7"."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)
    return ("lines " if len(numbers) > 1 else "line ") + text


class Ledger:
    """An output file seen by a --resume run: what it answers, and this run's claims (see the module docstring)."""

    def __init__(self, output: Path, model: str, warn: Callable[[str], None] = lambda message: None):
        self.output = output
        self.model = model
        self.claims = output.with_name(output.name + ".claims")
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "run": uuid.uuid4().hex}
        records, bad = read_records(output)
        if bad:
            verb = "are" if len(bad) > 1 else "is"
            warn(f"{output}: {line_ranges(bad)} {verb} not {'records' if len(bad) > 1 else 'a record'} and "
                 f"{'were' if len(bad) > 1 else 'was'} ignored")
        self.answered = answered(records)

    def todo(self, items: Iterable[VideoQuestions]) -> list[VideoQuestions]:
        """The questions the file does not answer yet (as it is now), each video with those left (none: dropped)."""
        left = [VideoQuestions(item.video, tuple(q for q in item.questions
                                                 if record_key(item.video, q, self.model) not in self.answered))
                for item in items]
        return [item for item in left if item.questions]

    def claimed(self, items: Iterable[VideoQuestions]) -> Iterator[VideoQuestions]:
        """Each video with the questions this run should answer, claimed just before the video is handed out (to be
        read); a video none of whose questions are left to this run is skipped."""
        for item in items:
            mine = self.claim([record_key(item.video, q, self.model) for q in item.questions])
            questions = tuple(q for q, claimed in zip(item.questions, mine, strict=True) if claimed)
            if questions:
                yield VideoQuestions(item.video, questions)

    def claim(self, keys: list[Key]) -> list[bool]:
        """Claim each key unless the file answers it by now or a live run claimed it; True: it is this run's."""
        self.claims.parent.mkdir(parents=True, exist_ok=True)
        with self.claims.open("a+", encoding="utf-8") as file, locked(file):
            done = answered(read_records(self.output)[0])
            file.seek(0)
            wanted, taken = set(keys), set()
            for line in file.read().splitlines():
                try:
                    claim = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(claim, dict):
                    continue
                key = tuple(claim.get("key", ()))
                if key in wanted and self._alive(claim):
                    taken.add(key)
            mine = [key not in done and key not in taken for key in keys]
            for key, claimed in zip(keys, mine, strict=True):
                if claimed:
                    file.write(json.dumps({"key": list(key), **self.me, "time": time.time()}) + "\n")
            file.flush()
        return mine

    def _alive(self, claim: dict[str, Any]) -> bool:
        """Whether the run that made `claim` may still be answering it (this run's own claims count as alive; an
        earlier run of this same process has ended)."""
        if claim.get("host") != self.me["host"]:
            return time.time() - float(claim.get("time", 0)) < CLAIM_HOURS * 3600
        pid = claim.get("pid")
        if pid == self.me["pid"]:
            return bool(claim.get("run") == self.me["run"])
        try:
            os.kill(int(pid), 0)  # type: ignore[arg-type]
        except (OSError, TypeError, ValueError):
            return False
        return True
