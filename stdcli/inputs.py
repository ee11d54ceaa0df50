"""What the user asks: the videos (files, folders, paths on stdin) and the options of the question. Importing this
costs nothing (no torch): the command line checks its input with it before any model loads."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engine.options import DecodeOptions

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
NO_SUCH_PATH = "no such file or folder"


@dataclass
class FrameOptions:
    """Frame sampling asked for on the command line; None means the model family's default."""

    fps: float | None = None
    frames: int | None = None  # exact count, exclusive with fps
    min_frames: int | None = None
    max_frames: int | None = None
    max_pixels: int | None = None


@dataclass
class AskOptions:
    question: str = ""  # what answer_video and answer_videos ask (answer_questions is given its questions)
    system: str | None = None
    frames: FrameOptions = field(default_factory=FrameOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    compare: bool = False  # also decode densely and report the measured speedup

    @property
    def mode(self) -> str:
        return self.decode.mode


@dataclass(frozen=True)
class VideoQuestions:
    """A video and the questions asked of it, in order: it is read, encoded and prefilled once for all of them."""

    video: str
    questions: tuple[str, ...]


class InputError(Exception):
    """Bad command-line input (exit status 2)."""


QUESTIONS_FORMAT = '{"question": ...} (asked of every video) or {"video": PATH, "question": ...}'


def read_questions(path: Path) -> list[tuple[str | None, str]]:
    """The lines of a questions file (JSONL, QUESTIONS_FORMAT; blank lines skipped) as (video, question) in order,
    video None for a question asked of every video. A relative PATH is looked up beside the file first; it must be
    a file. InputError (one line, with the line number) for a line that is not one of these."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read --questions {path}: {getattr(error, 'strerror', None) or error}") from None
    entries: list[tuple[str | None, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            raise InputError(f"{path}:{number}: not a JSON object: each line is {QUESTIONS_FORMAT}")
        question, video = entry.get("question"), entry.get("video")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f'{path}:{number}: needs a non-empty "question": each line is {QUESTIONS_FORMAT}')
        if video is None:
            entries.append((None, question))
            continue
        if not isinstance(video, str) or not video.strip():
            raise InputError(f'{path}:{number}: "video" must be the path of a video file')
        beside = path.parent / video
        video = str(beside) if not Path(video).is_absolute() and beside.exists() else video
        if not Path(video).is_file():
            raise InputError(f"{path}:{number}: no such video {video}")
        entries.append((video, question))
    return entries


def plan_questions(videos: Sequence[str], asked: Sequence[str],
                   entries: Sequence[tuple[str | None, str]] = ()) -> list[VideoQuestions]:
    """Each video with its questions: the videos given, then those only `entries` (read_questions) name, in order.
    A video's questions are those `asked` of every video, then the entries for every video or for it, in order;
    each question once (surrounding whitespace aside). InputError for a video no question is asked of."""
    known = {os.path.realpath(v) for v in videos}
    extra: dict[str, str] = {}  # resolved path -> the path as the file gives it, first mention
    for video, _ in entries:
        if video is not None and os.path.realpath(video) not in known:
            extra.setdefault(os.path.realpath(video), video)
    plan = []
    for video in [*videos, *extra.values()]:
        real = os.path.realpath(video)
        wanted = [*asked, *(q for v, q in entries if v is None or os.path.realpath(v) == real)]
        questions: dict[str, str] = {}
        for question in wanted:
            questions.setdefault(question.strip(), question)
        if not questions:
            raise InputError(f"{video}: no question is asked of it")
        plan.append(VideoQuestions(video, tuple(questions.values())))
    return plan


def collect_videos(arguments: Sequence[str], stdin: Iterable[str]) -> list[str]:
    """Video paths from files, folders (recursively, sorted) and '-' (one path per line on stdin), in order.

    A path named on the command line must exist (else an input error: a typo stops the run before the model loads);
    a path read from stdin is data, kept even if missing, and its record says why. A file is kept whatever it holds:
    its record says if it is not a video. A folder named on the command line must hold videos.
    """
    videos: list[str] = []
    for argument in arguments:
        if argument == "-":
            for line in stdin:
                path = line.strip()
                if path:
                    videos.extend(videos_in(path) if Path(path).is_dir() else [path])
        elif Path(argument).is_dir():
            found = videos_in(argument)
            if not found:
                raise InputError(f"{argument}: folder holds no videos ({' '.join(VIDEO_EXTENSIONS)})")
            videos.extend(found)
        elif Path(argument).exists():
            videos.append(argument)
        else:
            raise InputError(f"{argument}: {NO_SUCH_PATH}")
    if not videos:
        raise InputError("no videos given (files, folders, or '-' to read paths from stdin)")
    return videos


def videos_in(folder: str) -> list[str]:
    """The videos under `folder`, recursively, sorted by path."""
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Bytes of a size as a user writes it: 4G, 512M, 1.5GiB, 300000 (units of 1024: K, M, G, T, with or without
    a trailing B or iB, any case). InputError for anything else, or a size under 1 byte."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or (match.group(3) and not match.group(2) and match.group(3).lower() != "b"):
        raise InputError(f"{text!r} is not a size: write it as 4G, 512M or a number of bytes")
    size = int(float(match.group(1)) * 1024 ** _UNITS[match.group(2).lower()])
    if size < 1:
        raise InputError(f"{text!r} is less than one byte")
    return size
