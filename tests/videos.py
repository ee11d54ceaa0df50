"""Small test videos written with PyAV, whose pictures say which frame they are.

Each frame shows its number in binary as a grid of big black/white cells (`frame_picture`), so a test can read
back WHICH frame a sampler returned (`read_frame_number`) through lossy compression, scaling and rotation.

    from tests.videos import write_video, read_frame_number
    path = write_video(tmp_path / "clip.mp4", frames=30)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = (3, 4)  # rows x columns of cells: 12 bits, frame numbers 0..4095
ONE = 1 << 16  # 1.0 in the 16.16 fixed point of a display matrix
W = 1 << 30  # the matrix's homogeneous 1.0 (2.30 fixed point)


def frame_picture(number: int, width: int, height: int) -> np.ndarray:
    """The upright RGB picture of frame `number`: bit k is cell k (row-major) white, else black."""
    rows, cols = GRID
    picture = np.zeros((height, width, 3), np.uint8)
    for k in range(rows * cols):
        if number >> k & 1:
            r, c = divmod(k, cols)
            picture[_span(r, rows, height), _span(c, cols, width)] = 255
    return picture


def read_frame_number(picture: np.ndarray) -> int:
    """Inverse of `frame_picture`: reads the centre of each cell, so blurred cell edges do not matter."""
    rows, cols = GRID
    height, width = picture.shape[:2]
    number = 0
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        if _centre(picture[_span(r, rows, height), _span(c, cols, width)]).mean() > 128:
            number |= 1 << k
    return number


def _span(i: int, n: int, size: int) -> slice:
    return slice(i * size // n, (i + 1) * size // n)


def _centre(cell: np.ndarray) -> np.ndarray:
    h, w = cell.shape[:2]
    return cell[h // 4 : h - h // 4, w // 4 : w - w // 4]


@dataclass(frozen=True)
class Orientation:
    """A display matrix and how a camera stores the upright picture so that the matrix shows it upright."""

    matrix: tuple[int, ...]
    stored: Callable[[np.ndarray], np.ndarray]


# Matrices as ISO/QuickTime `tkhd` writes them (a b u / c d v / x y w); e.g. an iPhone held upright records
# landscape pixels turned a quarter left, with the matrix that turns them a quarter right (clockwise) for display.
ROTATE_CLOCKWISE = Orientation((0, ONE, 0, -ONE, 0, 0, 0, 0, W), lambda p: np.rot90(p, 1))
ROTATE_ANTICLOCKWISE = Orientation((0, -ONE, 0, ONE, 0, 0, 0, 0, W), lambda p: np.rot90(p, -1))
ROTATE_180 = Orientation((-ONE, 0, 0, 0, -ONE, 0, 0, 0, W), lambda p: p[::-1, ::-1])
MIRROR = Orientation((-ONE, 0, 0, 0, ONE, 0, 0, 0, W), lambda p: p[:, ::-1])


class _NoSeek:
    """A write-only file: muxers cannot go back to write a duration or a seek index (as when streaming)."""

    def __init__(self, file):
        self.file = file

    def write(self, data: bytes) -> int:
        return self.file.write(data)


def write_video(
    path: str | os.PathLike,
    *,
    frames: int = 20,
    width: int = 64,
    height: int = 48,
    rate: int = 10,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    format: str | None = None,
    options: dict[str, str] | None = None,
    pts_ms: Sequence[int] | None = None,
    orientation: Orientation | None = None,
    audio_first: bool = False,
    streamed: bool = False,
) -> str:
    """Write a video whose frame i shows `frame_picture(i)`; returns the path.

    pts_ms: presentation times in milliseconds (variable frame rate), one per frame (`frames` is then unused);
        default i / rate.
    orientation: store the pictures turned and set the display matrix that turns them back upright.
    audio_first: an AAC stream comes first in the file, the video stream second.
    streamed: written without seeking back, so the container holds no duration (and, for Matroska, no cues).
    """
    path = str(path)
    time_base = Fraction(1, 1000) if pts_ms is not None else Fraction(1, rate)
    pts = list(pts_ms) if pts_ms is not None else list(range(frames))
    stored_width, stored_height = (height, width) if orientation and orientation.matrix[0] == 0 else (width, height)
    with open(path, "wb") as file:
        with av.open(_NoSeek(file) if streamed else file, "w", format=format or _format_of(path)) as container:
            audio = _Audio(container) if audio_first else None
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = stored_width, stored_height, pix_fmt
            stream.codec_context.time_base = time_base
            options = options or {}
            # near-lossless x264 unless asked otherwise, so that cells keep their colour even in 64x48 pictures
            stream.options = ({"qp": "10"} if codec.startswith("libx264") and "crf" not in options else {}) | options
            if orientation:
                stream.set_display_matrix(list(orientation.matrix))
            for i, t in enumerate(pts):
                picture = frame_picture(i, width, height)
                stored = orientation.stored(picture) if orientation else picture
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored))
                frame.pts, frame.time_base = t, time_base
                if audio is not None:
                    audio.write_until(float(t * time_base))
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
            if audio is not None:
                audio.close()
    return path


def _format_of(path: str) -> str:
    return {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov", ".m4v": "mp4"}.get(
        Path(path).suffix.lower(), "mp4"
    )


class _Audio:
    """A silent mono AAC stream, written in step with the video as a real recorder would (interleaved)."""

    def __init__(self, container):
        self.container = container
        self.stream = container.add_stream("aac", rate=8000)
        self.stream.layout = "mono"
        self.samples = 0

    def write_until(self, seconds: float) -> None:
        while self.samples <= seconds * self.stream.rate:
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = self.stream.rate, self.samples
            self.container.mux(self.stream.encode(frame))
            self.samples += 1024

    def close(self) -> None:
        self.container.mux(self.stream.encode())


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> str:
    path = str(path)
    with av.open(path, "w", format=_format_of(path)) as container:
        audio = _Audio(container)
        audio.write_until(seconds)
        audio.close()
    return path


def write_text(path: str | os.PathLike) -> str:
    Path(path).write_text("This is not a video.\n" * 50)
    return str(path)


def damage_frames(path: str | os.PathLike, first: int, last: int, keep: float = 0.0) -> None:
    """Overwrite with noise the packets of frames first..last (presentation order), but their first 4 bytes (the
    length field of a NAL unit in MP4) or the fraction `keep` of them if more, so that headers may survive.

    The container stays intact, only the coded pictures are damaged: as with a bad sector or a broken download.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.pos, p.size) for p in container.demux(stream) if p.size and p.pts is not None]
    presentation = sorted(pts for pts, _, _ in packets)
    doomed = set(presentation[first : last + 1])
    noise = np.random.default_rng(0)
    with open(path, "r+b") as file:
        for pts, pos, size in packets:
            if pts in doomed:
                kept = min(size, max(4, int(size * keep)))
                file.seek(pos + kept)
                file.write(noise.integers(0, 256, size - kept, dtype=np.uint8).tobytes())
