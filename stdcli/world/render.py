"""Drawing clips: numpy-only frame rendering from cached anti-aliased shape masks, and H.264 sample videos."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from functools import cache, lru_cache
from pathlib import Path

import av
import numpy as np

from .scene import RADIUS, Clip, object_look_at

# Sub-samples per pixel side when building a mask: enough for smooth edges, cheap since masks are cached.
SUPERSAMPLE = 4
# Mask radii are kept to quarter pixels, so growing and shrinking objects reuse a few hundred masks.
RADIUS_STEPS_PER_PIXEL = 4
# Brightness of the top and bottom rows relative to the background color: a soft vertical gradient.
GRADIENT = (1.15, 0.85)
# Frames are drawn and encoded in chunks so that long clips at large sizes do not sit in memory at once.
VIDEO_CHUNK = 64

DrawOp = tuple[str, int, int, int, tuple[int, int, int]]  # shape, quantized radius, center row, center column, rgb


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v), in units of the object radius around its center (v down), lie in the shape."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "triangle":  # apex up, base at the bottom, the whole triangle within the radius box
        return (v >= -1.0) & (v <= 0.8) & (np.abs(u) <= (v + 1.0) / 1.8)
    if shape == "cross":
        au, av_ = np.abs(u), np.abs(v)
        return ((au <= 0.35) & (av_ <= 1.0)) | ((av_ <= 0.35) & (au <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


@cache
def shape_alpha(shape: str, radius_steps: int) -> np.ndarray:
    """Anti-aliased coverage (0..255, uint16, shape (n, n, 1)) of a shape of radius radius_steps / 4 pixels, centered
    on the middle pixel of an odd-sided square."""
    radius = radius_steps / RADIUS_STEPS_PER_PIXEL
    half = math.ceil(radius) + 1
    n = 2 * half + 1
    offsets = (np.arange(n * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5 - half
    v, u = np.meshgrid(offsets / radius, offsets / radius, indexing="ij")
    coverage = _inside(shape, u, v).reshape(n, SUPERSAMPLE, n, SUPERSAMPLE).mean(axis=(1, 3))
    return np.round(coverage * 255).astype(np.uint16)[:, :, None]


@lru_cache(maxsize=512)
def _blend_terms(shape: str, radius_steps: int, rgb: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(255 - alpha, alpha * rgb + 127): out = (background * first + second) // 255 blends with rounding."""
    alpha = shape_alpha(shape, radius_steps)
    return 255 - alpha, alpha * np.array(rgb, dtype=np.uint16) + 127


@lru_cache(maxsize=64)
def background_image(rgb: tuple[int, int, int], height: int, width: int) -> np.ndarray:
    rows = np.linspace(GRADIENT[0], GRADIENT[1], height)[:, None, None]
    image = np.clip(rows * np.array(rgb, dtype=np.float64), 0, 255).round().astype(np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(image, (height, width, 3)))
    image.flags.writeable = False  # shared through the cache
    return image


def _draw_ops(clip: Clip, t: float, height: int, width: int) -> tuple[DrawOp, ...]:
    """What frame ``t`` shows, in pixels; equal tuples mean equal frames."""
    side = min(height, width)
    ops = []
    for i, o in enumerate(clip.objects):
        scale, x, y, rgb = object_look_at(clip, i, t)
        steps = round(RADIUS[o.size] * side * scale * RADIUS_STEPS_PER_PIXEL)
        if steps < RADIUS_STEPS_PER_PIXEL // 2:  # under half a pixel: nothing to see
            continue
        row, col = round(y * height - 0.5), round(x * width - 0.5)
        ops.append((o.shape, steps, row, col, (round(rgb[0]), round(rgb[1]), round(rgb[2]))))
    return tuple(ops)


def _paint(frame: np.ndarray, op: DrawOp) -> None:
    shape, steps, row, col, rgb = op
    keep, add = _blend_terms(shape, steps, rgb)
    half = keep.shape[0] // 2
    top, left = row - half, col - half
    # Clip the mask to the frame: anti-aliased rims may stick out by a pixel at the edges.
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + keep.shape[0], frame.shape[0]), min(left + keep.shape[1], frame.shape[1])
    if r0 >= r1 or c0 >= c1:
        return
    mask = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
    patch = frame[r0:r1, c0:c1]
    patch[...] = (patch * keep[mask] + add[mask]) // 255


def render_frames(clip: Clip, timestamps: Sequence[float], size: int | tuple[int, int] = 112) -> np.ndarray:
    """RGB frames (T, H, W, 3) uint8 of ``clip`` at ``timestamps`` (seconds); size is a side or (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    background = background_image(clip.background.rgb, height, width)
    frames = np.empty((len(timestamps), height, width, 3), dtype=np.uint8)
    previous: tuple[DrawOp, ...] | None = None
    for k, t in enumerate(timestamps):
        ops = _draw_ops(clip, float(t), height, width)
        if ops == previous:  # still stretches: most frames of long clips
            frames[k] = frames[k - 1]
            continue
        frames[k] = background
        for op in ops:
            _paint(frames[k], op)
        previous = ops
    return frames


def frame_times(duration: float, fps: float) -> np.ndarray:
    """Timestamps i / fps of every frame inside [0, duration)."""
    return np.arange(max(1, math.ceil(duration * fps - 1e-9))) / fps


def write_video(
    clip: Clip, path: str | Path, fps: float = 8.0, size: int | tuple[int, int] = (224, 224), codec: str = "h264"
) -> None:
    """Encode ``clip`` at ``fps`` (frame_times(clip.duration, fps)) to ``path`` as yuv420p; sides must be even."""
    height, width = (size, size) if isinstance(size, int) else size
    times = frame_times(clip.duration, fps)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for start in range(0, len(times), VIDEO_CHUNK):
            for rgb in render_frames(clip, times[start : start + VIDEO_CHUNK], (height, width)):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
