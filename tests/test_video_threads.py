"""Parallel decoding and fast conversion in sample_frames return exactly the frames a plain decode does.

The reference decodes every frame from the start, one decoder thread, and converts each one with
frame.to_ndarray as the sampler did before: whatever the number of threads, sample_frames must return the same
pixels, bit for bit, and for damaged files the same frames and warnings as with a single decoder.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from stdcli import video as video_module
from stdcli.video import orient, orientation, sample_frames, scaled_size, target_indices
from stdcli.world import generate_clip
from stdcli.world import write_video as write_world_video
from tests.videos import ROTATE_CLOCKWISE, damage_frames, read_frame_number, write_video


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("thread_videos")


def plain_decode(path: str, indices: list[int], max_pixels: int | None = None) -> np.ndarray:
    """Every frame decoded from the start by one decoder thread, in presentation order; the ones at `indices`
    converted to upright RGB with frame.to_ndarray, the size and display matrix taken from the first of them."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = sorted(container.decode(stream), key=lambda frame: frame.pts)
        first = frames[indices[0]]
        width, height = scaled_size(first.width, first.height, max_pixels)
        how = orientation(video_module.display_matrix(first))
        pictures = [
            orient(frames[i].to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA"), how)
            for i in indices
        ]
    return np.stack(pictures)


def x264(**options: str) -> dict:
    return dict(codec="libx264", options={"sc_threshold": "0"} | options)


CLEAN = {  # many GOPs each, so that there is work for several threads
    "gop10.mp4": dict(frames=200, **x264(g="10")),
    "bframes.mp4": dict(frames=200, **x264(g="12", bframes="3", **{"b-pyramid": "normal"})),
    "bframes_lossy.mkv": dict(frames=150, width=160, height=120, **x264(g="15", bframes="2", crf="28")),
    "clockwise.mp4": dict(frames=120, width=160, height=120, orientation=ROTATE_CLOCKWISE, **x264(g="10")),
    "vp9.webm": dict(
        frames=120, codec="libvpx-vp9", options={"g": "10", "crf": "30", "b": "0", "deadline": "realtime"}
    ),
    "streamed.mkv": dict(frames=120, streamed=True, **x264(g="10")),
    "clip.ts": dict(frames=120, format="mpegts", **x264(g="10", bframes="2")),
    "vfr.mp4": dict(pts_ms=list(itertools.accumulate(30 + (i % 5) * 17 for i in range(150))), **x264(g="9")),
}


@pytest.fixture(scope="module", params=sorted(CLEAN))
def clean_clip(request, folder) -> str:
    return write_video(folder / request.param, **CLEAN[request.param])


@pytest.fixture(scope="module")
def world_clip(folder) -> str:
    """A minute of the generated world's long clip as the CLI's users get it: 224x224, 8 fps, x264's defaults
    (B-frames, a keyframe every 250 frames)."""
    path = folder / "world_long.mp4"
    write_world_video(generate_clip(3, "long", 60.0), path, fps=8.0, size=(224, 224))
    return str(path)


def parallel_outcomes(monkeypatch) -> list[bool]:
    """Records, for each call of sample_frames, whether the parallel decoding went through (or fell back)."""
    outcomes: list[bool] = []
    original = video_module._decode_in_parallel

    def spy(*args, **kwargs):
        decoded = original(*args, **kwargs)
        outcomes.append(decoded is not None)
        return decoded

    monkeypatch.setattr(video_module, "_decode_in_parallel", spy)
    return outcomes


@pytest.mark.parametrize("count", [1, 7, 60, 400])
def test_threads_return_the_plain_decode_bit_for_bit(clean_clip, count, monkeypatch):
    outcomes = parallel_outcomes(monkeypatch)
    with av.open(clean_clip) as container:
        total = sum(1 for p in container.demux(video=0) if p.size)
    indices = target_indices(total, count)  # 400: more than the clip has, frames repeat
    expected = plain_decode(clean_clip, indices)
    for threads in (1, 2, 4):
        video = sample_frames(clean_clip, num_frames=count, threads=threads)
        assert video.indices == indices and video.warnings == []
        assert video.frames.dtype == np.uint8 and video.frames.flags.c_contiguous
        np.testing.assert_array_equal(video.frames, expected)
    assert outcomes == [True, True], "the parallel path did not run, or fell back"


@pytest.mark.parametrize("max_pixels", [80 * 60, 5000])
def test_threads_and_downscaling(folder, max_pixels):
    path = write_video(folder / f"big_{max_pixels}.mp4", frames=100, width=160, height=120, **x264(g="10"))
    indices = target_indices(100, 33)
    expected = plain_decode(path, indices, max_pixels)
    for threads in (1, 3):
        np.testing.assert_array_equal(sample_frames(path, num_frames=33, max_pixels=max_pixels, threads=threads).frames,
                                      expected)


def test_generated_world_clip(world_clip, monkeypatch):
    outcomes = parallel_outcomes(monkeypatch)
    indices = target_indices(480, 240)
    expected = plain_decode(world_clip, indices)
    for threads in (1, 4):
        np.testing.assert_array_equal(sample_frames(world_clip, num_frames=240, threads=threads).frames, expected)
    assert outcomes == [True]


def test_work_is_shared_between_threads(folder, monkeypatch):
    """Each thread decodes on its own container: several are opened, and units run on more than one thread."""
    path = write_video(folder / "shared.mp4", frames=400, width=160, height=120, **x264(g="5"))
    seen: set[int] = set()
    original = video_module._decode_unit

    def spy(*args, **kwargs):
        seen.add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(video_module, "_decode_unit", spy)
    for _ in range(5):  # a thread may, rarely, take every unit before the others start: try a few times
        video = sample_frames(path, num_frames=400, threads=4)
        if len(seen) > 2:
            break
    assert len(seen) > 2  # the caller's thread (the first frame) and at least two of the pool
    assert [read_frame_number(frame) for frame in video.frames] == list(range(400))


DAMAGED = {
    "damaged_h264.mp4": (x264(g="25", bframes="3"), 0),
    "damaged_quietly_h264.mp4": (x264(g="25", crf="30"), 0.25),
    "damaged_out_of_order_h264.mp4": (x264(g="25", crf="23"), 0.25),
    "damaged_mpeg4.mkv": (dict(codec="mpeg4", options={"g": "25"}), 0),
    "damaged_vp8.webm": (dict(codec="libvpx", options={"g": "25", "crf": "4", "b": "1M"}), 0),
    "damaged_mjpeg.avi": (dict(codec="mjpeg", pix_fmt="yuvj420p"), 0),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
@pytest.mark.parametrize("count", [100, 13, 4])
def test_damaged_files_give_what_one_decoder_gives(folder, name, count, monkeypatch):
    """Damage is handled by the sequential pass: a unit that meets it makes the parallel decoding fall back."""
    options, keep = DAMAGED[name]
    path = folder / name
    if not path.exists():
        write_video(path, frames=100, **options)
        damage_frames(path, 40, 45, keep=keep)
    outcomes = parallel_outcomes(monkeypatch)
    alone = sample_frames(path, num_frames=count, threads=1)
    together = sample_frames(path, num_frames=count, threads=4)
    assert together.indices == alone.indices and together.warnings == alone.warnings
    np.testing.assert_array_equal(together.frames, alone.frames)
    assert outcomes == [not alone.warnings]  # fell back exactly when there was damage to report


def test_cannot_seek_falls_back_with_threads(folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise video_module.CannotSeek("Operation not permitted")

    path = write_video(folder / "no_seek.mp4", frames=60, **x264(g="5", bframes="2"))
    monkeypatch.setattr(video_module, "packets_from_keyframe", refuse)
    video = sample_frames(path, num_frames=9, threads=4)
    assert [read_frame_number(frame) for frame in video.frames] == video.indices == target_indices(60, 9)


def test_threads_must_be_positive(folder):
    path = write_video(folder / "args.mp4", frames=5)
    with pytest.raises(ValueError, match="threads"):
        sample_frames(path, num_frames=2, threads=0)
