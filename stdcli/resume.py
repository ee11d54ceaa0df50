"""`--resume`: which videos an output file already answers, and claims that let several runs share one file.

A video is answered when the file holds a successful record of the same file (its path resolved, the record's
`video_path`: "./a.mp4", "a.mp4" and "/data/a.mp4" are one video, whichever folder each run ran in; `video`
keeps the path as given), the same question (surrounding whitespace aside) and the same model name. Failed records
do not count: --resume tries those videos again.

Runs that resume into one file at the same time share the work: before a video is read, a run claims it in
FILE.claims (under an exclusive lock, after reading what the file answers by then); a video answered, or claimed by
a run that is still alive, is left to it. A claim of a run on another host counts for CLAIM_HOURS (its process
cannot be checked from here); delete FILE.claims to take such videos back sooner.
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

    def todo(self, videos: list[str], question: str) -> list[str]:
        """The videos the file does not answer yet (as it is now)."""
        return [v for v in videos if record_key(v, question, self.model) not in self.answered]

    def claimed(self, videos: Iterable[str], question: str) -> Iterator[str]:
        """The videos this run should answer, each claimed just before it is handed out."""
        for video in videos:
            if self.claim(record_key(video, question, self.model)):
                yield video

    def claim(self, key: Key) -> bool:
        """Claim `key` unless the file answers it by now or a live run claimed it; True: it is this run's."""
        self.claims.parent.mkdir(parents=True, exist_ok=True)
        with self.claims.open("a+", encoding="utf-8") as file, locked(file):
            if key in answered(read_records(self.output)[0]):
                return False
            file.seek(0)
            for line in file.read().splitlines():
                try:
                    claim = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(claim, dict) and tuple(claim.get("key", ())) == key and self._alive(claim):
                    return False
            file.write(json.dumps({"key": list(key), **self.me, "time": time.time()}) + "\n")
            file.flush()
        return True

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
