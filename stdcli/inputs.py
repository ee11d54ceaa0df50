"""What the user asks: the videos (files, folders, paths on stdin) and the options of the question. Importing this
costs nothing (no torch): the command line checks its input with it before any model loads."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engine.options import DecodeOptions

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")


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
    question: str
    system: str | None = None
    frames: FrameOptions = field(default_factory=FrameOptions)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    compare: bool = False  # also decode densely and report the measured speedup

    @property
    def mode(self) -> str:
        return self.decode.mode


class InputError(Exception):
    """Bad command-line input (exit status 2)."""


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
            raise InputError(f"{argument}: no such file or folder")
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
