"""What the user asks: the videos (files, folders, paths on stdin) and the options of the question. Importing this
costs nothing (no torch): the command line checks its input with it before any model loads."""

from __future__ import annotations

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
