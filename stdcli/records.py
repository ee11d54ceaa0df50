"""The record of one answered (or failed) question about a video: a contract that scripts rely on, and where it is
written.

`Record.to_dict()` gives the JSON object: its keys never change meaning or disappear, a key that does not apply is
null, and they come in a fixed order (RECORD_KEYS, then the keys added later, EXTRA_KEYS; README.md documents
both). `Record.stats` carries the engine's own counters for code that wants them (the benchmarks); it is not part
of the JSON.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .engine.stats import DecodeStats
from .errors import one_line

RECORD_KEYS = (
    "video",
    "question",
    "answer",
    "model",
    "mode",
    "frames",
    "visual_tokens",
    "prompt_tokens",
    "new_tokens",
    "timings",
    "tokens_per_s",
    "acceptance_rate",
    "mean_accepted_length",
    "speedup_est",
    "k",
    "gamma",
    "error",
)
# compare: with --compare, the dense run's answer and the measured speedup; warnings: the sampler's one-line warnings
# (e.g. a damaged stretch that was skipped), a list on success; gammas: {"gamma": cycles} actually used ("0": plain
# dense steps), dense_share: share of the decoded tokens that came from dense steps (both StD mode only);
# finish_reason: "stop" (the model ended its answer) or "length" (cut off by max_new_tokens); video_path: the
# video's absolute path, symbolic links resolved (what --resume matches, whatever the working folder); drafts:
# {"kind": cycles} of the StD cycles each draft kind drafted (StD mode only).
EXTRA_KEYS = ("compare", "warnings", "gammas", "dense_share", "finish_reason", "video_path", "drafts")
# processor_s: building the prompt (the processor on the frames, or a later question's own prompt); first_token_s:
# from the start of this answer's work to its first token (added after the first four).
TIMING_KEYS = ("load_video_s", "prefill_s", "decode_s", "total_s", "processor_s", "first_token_s")


@dataclass
class Record:
    video: str
    question: str
    model: str
    mode: str
    answer: str | None = None
    frames: int | None = None
    visual_tokens: int | None = None
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    timings: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(TIMING_KEYS))
    tokens_per_s: float | None = None
    acceptance_rate: float | None = None
    mean_accepted_length: float | None = None
    speedup_est: float | None = None
    k: int | None = None
    gamma: int | str | None = None
    error: dict[str, str] | None = None
    compare: dict[str, Any] | None = None
    warnings: list[str] | None = None
    gammas: dict[str, int] | None = None
    dense_share: float | None = None
    finish_reason: str | None = None
    video_path: str | None = None
    drafts: dict[str, int] | None = None
    stats: DecodeStats | None = field(default=None, repr=False, compare=False)  # not serialized

    @classmethod
    def failed(cls, video: str, question: str, model: str, mode: str, error: BaseException) -> Record:
        return cls(video, question, model, mode, error={"type": type(error).__name__, "message": one_line(error)})

    @property
    def ok(self) -> bool:
        return self.error is None

    def __post_init__(self) -> None:
        if self.video_path is None and self.video != "-":
            self.video_path = os.path.realpath(self.video)

    def to_dict(self) -> dict[str, Any]:
        record = {key: getattr(self, key) for key in RECORD_KEYS + EXTRA_KEYS}
        record["timings"] = dict(self.timings)
        return record

    def to_json(self, pretty: bool = False) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2 if pretty else None)


class JsonlWriter:
    """Appends records to a JSONL file, each line with one write() to a file opened for appending (O_APPEND), under
    an exclusive lock, then fsynced: processes appending to one file at once (runs, the ranks of a torchrun group,
    on one host or over a shared filesystem with locks) never split or mix lines, and a run that is stopped keeps
    every line it finished. Opening checks the lock too: a filesystem without one fails here, before any work."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            with locked(self._fd):
                pass
        except OSError:
            os.close(self._fd)
            raise

    def write(self, record: Record) -> None:
        line = (record.to_json() + "\n").encode("utf-8")
        with locked(self._fd):
            if not _ends_with_newline(self._fd):
                line = b"\n" + line  # a run killed mid-line: start clean
            while line:  # one write(); a short one (a full disk) is finished, still under the lock
                line = line[os.write(self._fd, line) :]
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


@contextmanager
def locked(file: int | IO[str]) -> Iterator[None]:
    """An exclusive advisory lock on an open file (object or descriptor) for the block (other stdcli processes wait
    for it)."""
    fcntl.flock(file, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(file, fcntl.LOCK_UN)


def _ends_with_newline(fd: int) -> bool:
    """Whether the file is empty or its last line is whole."""
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"
