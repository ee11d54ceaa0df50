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
    """Appends records to a JSONL file, one flushed (and fsynced) line each, so an interrupted run keeps them; each
    line is written whole under an exclusive lock, so that runs appending to one file at once never mix lines."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def write(self, record: Record) -> None:
        with locked(self._file):
            if not _ends_with_newline(self.path):
                self._file.write("\n")  # a run killed mid-line: start clean
            self._file.write(record.to_json() + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@contextmanager
def locked(file: IO[str]) -> Iterator[None]:
    """An exclusive advisory lock on an open file for the block (other stdcli processes wait for it)."""
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _ends_with_newline(path: Path) -> bool:
    """Whether the file is empty or its last line is whole."""
    with path.open("rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
