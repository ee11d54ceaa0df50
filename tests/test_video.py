"""Frame sampling: counts, which frames, their content, and every kind of awkward or broken file.

Videos are tiny (64x48 to 321x239, a few seconds) and written once per session by tests/videos.py; each frame shows
its own number, so a test checks WHICH frame it got, not just how many.
"""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from stdcli import video as video_module
from stdcli.video import Decoded, VideoError, choose_frame_count, decode_positions, probe, sample_frames, target_indices
from tests.videos import (
    MIRROR,
    ROTATE_180,
    ROTATE_ANTICLOCKWISE,
    ROTATE_CLOCKWISE,
    damage_frames,
    read_frame_number,
    write_audio_only,
    write_text,
    write_video,
)


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


def numbers(frames: np.ndarray) -> list[int]:
    return [read_frame_number(frame) for frame in frames]


def assert_frames_are(video, indices: list[int]) -> None:
    """The returned frames are these, and each shows the frame its index says."""
    assert video.indices == indices
    assert numbers(video.frames) == indices


# ---------------------------------------------------------------------------------------------- choose_frame_count

COUNT = dict(fps=None, num_frames=None, min_frames=1, max_frames=768, multiple_of=1)


@pytest.mark.parametrize(
    ("duration", "source", "overrides", "expected"),
    [
        (10.0, 300, dict(num_frames=32), 32),  # exact count wins over everything
        (10.0, 300, dict(num_frames=33, multiple_of=2), 33),  # ... even the multiple
        (1.0, 3, dict(num_frames=8), 8),  # ... and the clip's length: frames repeat
        (10.0, 300, dict(fps=2.0), 20),  # round(duration * fps)
        (10.2, 300, dict(fps=2.0), 20),
        (10.3, 300, dict(fps=2.0), 21),
        (1.0, 30, dict(fps=2.0, min_frames=4), 4),  # Qwen2-VL: at least 4
        (1000.0, 30000, dict(fps=2.0, max_frames=768), 768),  # at most 768
        (3.3, 100, dict(fps=2.0, multiple_of=2), 6),  # round(6.6) = 7, down to even
        (1.0, 30, dict(fps=2.0, min_frames=3, multiple_of=2), 4),  # min moved up to a multiple
        (1000.0, 30000, dict(fps=2.0, max_frames=767, multiple_of=2), 766),  # max moved down to a multiple
        (10.0, 5, dict(fps=2.0), 5),  # never more frames than the video has
        (10.0, 5, dict(fps=2.0, multiple_of=2), 4),  # ... rounded down to the multiple
        (10.0, 1, dict(fps=2.0, multiple_of=2), 2),  # ... but at least the multiple (a frame repeats)
        (2.0, 3, dict(fps=2.0, min_frames=4, multiple_of=2), 2),  # the video's length beats min_frames
        (0.0, 1, dict(fps=2.0), 1),
    ],
)
def test_choose_frame_count(duration, source, overrides, expected):
    assert choose_frame_count(duration, source, **(COUNT | overrides)) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),  # neither fps nor num_frames
        dict(fps=0.0),
        dict(fps=-1.0),
        dict(num_frames=0),
        dict(fps=2.0, min_frames=0),
        dict(fps=2.0, min_frames=10, max_frames=5),
        dict(fps=2.0, min_frames=3, max_frames=3, multiple_of=2),  # no even count in [3, 3]
        dict(fps=2.0, multiple_of=0),
    ],
)
def test_choose_frame_count_rejects_nonsense(overrides):
    with pytest.raises(ValueError):
        choose_frame_count(10.0, 100, **(COUNT | overrides))


def test_choose_frame_count_needs_frames():
    with pytest.raises(ValueError):
        choose_frame_count(10.0, 0, **(COUNT | dict(fps=2.0)))


@pytest.mark.parametrize(
    ("source", "count", "expected"),
    [
        (10, 4, [0, 3, 6, 9]),
        (30, 7, [0, 5, 10, 14, 19, 24, 29]),  # 14.5 rounds to even, as torch.round in Qwen's code does
        (1, 2, [0, 0]),
        (3, 5, [0, 0, 1, 2, 2]),
        (100, 1, [0]),
    ],
)
def test_target_indices_are_linspace_rounded(source, count, expected):
    assert target_indices(source, count) == expected


# ---------------------------------------------------------------------------------------------- content, containers

CODECS = {
    "h264.mp4": dict(codec="libx264"),
    "h264.mov": dict(codec="libx264"),
    "h264.m4v": dict(codec="libx264"),
    "mpeg4.mkv": dict(codec="mpeg4"),
    "vp8.webm": dict(codec="libvpx", options={"crf": "4", "b": "1M"}),
    "vp9.webm": dict(codec="libvpx-vp9", options={"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
    "mjpeg.avi": dict(codec="mjpeg", pix_fmt="yuvj420p"),
}


@pytest.fixture(scope="session", params=sorted(CODECS))
def clip(request, folder) -> str:
    """30 frames at 10 fps, 64x48, in each codec and container."""
    return write_video(folder / f"clip_{request.param}", frames=30, **CODECS[request.param])


def test_exact_count_returns_the_linspace_frames(clip):
    video = sample_frames(clip, num_frames=7)
    assert_frames_are(video, [0, 5, 10, 14, 19, 24, 29])
    assert video.frames.shape == (7, 48, 64, 3) and video.frames.dtype == np.uint8
    assert video.timestamps == pytest.approx([i / 10 for i in video.indices], abs=1e-6)
    assert (video.num_source_frames, video.source_fps, video.duration) == (30, pytest.approx(10), pytest.approx(3))
    assert video.warnings == []


def test_every_frame_in_order(clip):
    assert_frames_are(sample_frames(clip, num_frames=30), list(range(30)))


def test_fps_count_and_sample_fps(clip):
    video = sample_frames(clip, fps=2.0, min_frames=4, max_frames=768, multiple_of=2)  # Qwen2-VL's defaults
    assert_frames_are(video, [0, 6, 12, 17, 23, 29])
    assert video.sample_fps == pytest.approx(2.0)


def test_frames_repeat_when_the_clip_is_too_short(folder):
    path = write_video(folder / "three.mp4", frames=3)
    assert_frames_are(sample_frames(path, num_frames=6), [0, 0, 1, 1, 2, 2])
    assert_frames_are(sample_frames(path, fps=2.0, min_frames=4, multiple_of=2), [0, 2])


def test_long_gop_seeks_land_on_the_right_frames(folder):
    """300 frames, a keyframe every 100: several targets per GOP, and GOPs without any."""
    path = write_video(folder / "long_gop.mp4", frames=300, rate=30, options={"g": "100", "sc_threshold": "0"})
    for count in (2, 3, 4, 5, 13, 300):
        assert_frames_are(sample_frames(path, num_frames=count), target_indices(300, count))


def test_b_frames(folder):
    path = write_video(
        folder / "bframes.mp4",
        frames=60,
        options={"bframes": "3", "b-pyramid": "normal", "g": "12", "sc_threshold": "0"},
    )
    with av.open(path) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert any(p.pts != p.dts for p in packets), "the encoder made no B-frames"
    assert_frames_are(sample_frames(path, num_frames=60), list(range(60)))
    assert_frames_are(sample_frames(path, num_frames=9), target_indices(60, 9))


def test_b_frames_in_avi(folder):
    """AVI stores decoding times only: the decoder returns B-frame streams in presentation order with those
    decoding-order timestamps attached, so frames must be placed by counting, not by their timestamps."""
    path = write_video(
        folder / "bframes.avi", frames=60,
        options={"bframes": "3", "b-pyramid": "normal", "g": "12", "sc_threshold": "0"},
    )
    with av.open(path) as container:
        stream = container.streams.video[0]
        stamps = [f.pts for f in container.decode(stream)]
    assert stamps != sorted(stamps), "the decoder's timestamps are not scrambled: the case is not tested"
    assert_frames_are(sample_frames(path, num_frames=60), list(range(60)))
    for count in (2, 9, 16):
        video = sample_frames(path, num_frames=count)
        assert_frames_are(video, target_indices(60, count))
        assert video.warnings == []


def test_variable_frame_rate(folder):
    pts_ms = [0, 40, 300, 310, 320, 900, 1000, 1033, 1066, 2500, 2540, 2600]
    path = write_video(folder / "vfr.mp4", frames=len(pts_ms), pts_ms=pts_ms)
    video = sample_frames(path, num_frames=len(pts_ms))
    assert_frames_are(video, list(range(len(pts_ms))))
    assert video.timestamps == pytest.approx([t / 1000 for t in pts_ms], abs=1e-3)
    assert video.duration >= 2.6
    few = sample_frames(path, num_frames=4)  # evenly spread over the frames, not over time
    assert_frames_are(few, [0, 4, 7, 11])
    assert few.timestamps == pytest.approx([0.0, 0.32, 1.033, 2.6], abs=1e-3)


def test_variable_frame_rate_mkv(folder):
    pts_ms = [0, 100, 150, 700, 720, 1500]
    path = write_video(folder / "vfr.mkv", frames=len(pts_ms), pts_ms=pts_ms)
    video = sample_frames(path, num_frames=3)
    assert_frames_are(video, [0, 2, 5])
    assert video.timestamps == pytest.approx([0.0, 0.15, 1.5], abs=1e-3)


@pytest.mark.parametrize(("name", "codec"), [("streamed.mkv", "libx264"), ("streamed.webm", "libvpx")])
def test_container_without_duration(folder, name, codec):
    path = write_video(folder / name, frames=40, codec=codec, streamed=True, options={"g": "10"})
    with av.open(path) as container:
        assert container.duration is None and not container.streams.video[0].frames  # nothing stated
    video = sample_frames(path, num_frames=5)
    assert_frames_are(video, [0, 10, 20, 29, 39])
    assert (video.num_source_frames, video.duration, video.source_fps) == (40, pytest.approx(4.0), pytest.approx(10))
    assert sample_frames(path, fps=2.0).indices == target_indices(40, 8)


def test_raw_stream_without_timestamps(folder):
    """An H.264 elementary stream: no container, no timestamps, no seeking; frames are counted instead."""
    path = write_video(folder / "raw.h264", frames=30, format="h264")
    video = sample_frames(path, num_frames=4)
    assert_frames_are(video, [0, 10, 19, 29])
    assert (video.num_source_frames, video.source_fps, video.duration) == (30, pytest.approx(10), pytest.approx(3))
    assert video.timestamps == pytest.approx([0.0, 1.0, 1.9, 2.9])


def test_mpeg_ts_approximate_seeks(folder):
    """MPEG-TS has no seek index: FFmpeg's seeks land near, sometimes past the target, or not on a keyframe."""
    path = write_video(folder / "clip.ts", frames=50, format="mpegts", options={"g": "10"})
    assert_frames_are(sample_frames(path, num_frames=50), list(range(50)))
    for count in (3, 7, 11):
        assert_frames_are(sample_frames(path, num_frames=count), target_indices(50, count))


def test_container_that_cannot_seek_is_decoded_from_the_start(folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise video_module.CannotSeek("Operation not permitted")

    path = write_video(folder / "no_seek.mp4", frames=30, options={"g": "5", "bframes": "2"})
    monkeypatch.setattr(video_module, "packets_from_keyframe", refuse)
    assert_frames_are(sample_frames(path, num_frames=7), target_indices(30, 7))


def test_audio_stream_first(folder):
    path = write_video(folder / "audio_first.mp4", frames=30, audio_first=True)
    with av.open(path) as container:
        assert container.streams[0].type == "audio" and container.streams[1].type == "video"
    video = sample_frames(path, num_frames=4)
    assert_frames_are(video, [0, 10, 19, 29])
    assert video.duration == pytest.approx(3.0)  # the video's, not the container's (audio may run longer)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("odd_h264_444.mp4", dict(codec="libx264", pix_fmt="yuv444p")),
        ("odd_vp8.webm", dict(codec="libvpx", options={"crf": "4", "b": "1M"})),
        ("odd_mjpeg.avi", dict(codec="mjpeg", pix_fmt="yuvj420p")),
    ],
)
def test_odd_frame_size(folder, name, options):
    path = write_video(folder / name, frames=10, width=321, height=239, **options)
    video = sample_frames(path, num_frames=4)
    assert video.frames.shape == (4, 239, 321, 3)
    assert_frames_are(video, [0, 3, 6, 9])


# ---------------------------------------------------------------------------------------------- orientation, size


@pytest.mark.parametrize(
    ("name", "orientation"),
    [
        ("clockwise.mp4", ROTATE_CLOCKWISE),  # a phone held upright
        ("anticlockwise.mov", ROTATE_ANTICLOCKWISE),
        ("upside_down.mp4", ROTATE_180),
        ("mirrored.mp4", MIRROR),  # a front camera's picture
        ("clockwise.mkv", ROTATE_CLOCKWISE),
    ],
)
def test_display_matrix_is_applied(folder, name, orientation):
    path = write_video(folder / name, frames=10, orientation=orientation)
    with av.open(path) as container:  # the pixels are stored turned: unreadable as they are
        stored = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert numbers(np.stack(stored)) != list(range(10))
    video = sample_frames(path, num_frames=4)
    assert video.frames.shape == (4, 48, 64, 3)  # upright: the picture's own 64x48
    assert_frames_are(video, [0, 3, 6, 9])


def test_probe_reports_the_displayed_size(folder):
    path = write_video(folder / "portrait.mp4", frames=10, width=48, height=64, orientation=ROTATE_CLOCKWISE)
    assert probe(path) == {
        "duration": pytest.approx(1.0),
        "fps": pytest.approx(10.0),
        "frames": 10,
        "width": 48,
        "height": 64,
        "rotation": -90,  # FFmpeg's convention: degrees anticlockwise; this matrix turns clockwise
        "codec": "h264",
    }


def test_probe_without_duration(folder):
    path = write_video(folder / "probe_streamed.mkv", frames=25, streamed=True)
    info = probe(path)
    assert (info["frames"], info["duration"], info["width"], info["height"]) == (25, pytest.approx(2.5), 64, 48)


def test_max_pixels_downscales_keeping_the_aspect_ratio(folder):
    path = write_video(folder / "big.mp4", frames=10, width=160, height=120)
    video = sample_frames(path, num_frames=3, max_pixels=80 * 60)
    assert video.frames.shape == (3, 60, 80, 3)
    assert_frames_are(video, [0, 4, 9])
    odd = sample_frames(path, num_frames=1, max_pixels=5000)
    height, width = odd.frames.shape[1:3]
    assert width * height <= 5000 and width / height == pytest.approx(4 / 3, rel=0.03)
    assert sample_frames(path, num_frames=1, max_pixels=10**6).frames.shape == (1, 120, 160, 3)


def test_max_pixels_with_rotation(folder):
    path = write_video(folder / "big_turned.mp4", frames=10, width=160, height=120, orientation=ROTATE_CLOCKWISE)
    video = sample_frames(path, num_frames=2, max_pixels=80 * 60)
    assert video.frames.shape == (2, 60, 80, 3)
    assert_frames_are(video, [0, 9])


# ---------------------------------------------------------------------------------------------- damaged data


def x264(**options: str) -> dict:
    return dict(codec="libx264", options={"g": "25", "sc_threshold": "0"} | options)


@pytest.mark.parametrize(
    ("name", "options", "keep"),
    [
        ("damaged_h264.mp4", x264(bframes="3"), 0),
        # Slice headers survive: the decoder takes the first damaged P-frame for a good one (no error), and the
        # B-frames decoded from it come out after the error it raises on a later packet...
        ("damaged_quietly_h264.mp4", x264(crf="30"), 0.25),
        # ... or even after the next keyframe, out of presentation order
        ("damaged_out_of_order_h264.mp4", x264(crf="23"), 0.25),
        ("damaged_mpeg4.mkv", dict(codec="mpeg4", options={"g": "25"}), 0),
        ("damaged_vp8.webm", dict(codec="libvpx", options={"g": "25", "crf": "4", "b": "1M"}), 0),
        ("damaged_mjpeg.avi", dict(codec="mjpeg", pix_fmt="yuvj420p"), 0),
    ],
)
def test_damaged_stretch_is_skipped(folder, name, options, keep):
    path = write_video(folder / name, frames=100, **options)
    damage_frames(path, 40, 45, keep=keep)
    video = sample_frames(path, num_frames=100)
    assert len(video.frames) == 100  # the count is kept
    assert numbers(video.frames) == video.indices  # no garbage passes for a frame: each is what it says
    assert not set(video.indices) & set(range(40, 46))
    replaced = [i for i, got in enumerate(video.indices) if got != i]
    # only frames in the stretch, up to the next keyframe (50) and a few before (B-frames decoded after it)
    assert replaced and all(35 <= i < 50 for i in replaced)
    for i in replaced:  # ... each from the nearest frame that decoded
        assert abs(video.indices[i] - i) <= min(abs(good - i) for good in set(video.indices) if good != i)
    assert len(video.warnings) == 1 and "\n" not in video.warnings[0]
    assert re.match(r"frames \d+-\d+ \(.*\) could not be decoded, skipped; \d+ sampled frames taken", video.warnings[0])
    untouched = sample_frames(path, num_frames=4)  # frames 0, 33, 66, 99 need nothing from the stretch
    assert_frames_are(untouched, [0, 33, 66, 99])
    assert untouched.warnings == []


def test_damaged_intra_only_takes_the_nearest_neighbour(folder):
    path = write_video(folder / "damaged_nearest.avi", frames=60, codec="mjpeg", pix_fmt="yuvj420p")
    damage_frames(path, 25, 29)
    video = sample_frames(path, num_frames=60)
    assert video.indices[23:32] == [23, 24, 24, 24, 24, 30, 30, 30, 31]  # a tie goes to the earlier frame
    assert video.warnings == [
        "frames 25-29 (2.50-2.90 s) could not be decoded, skipped; "
        "5 sampled frames taken from the nearest decodable frame"
    ]


# ---------------------------------------------------------------------------------------------- unreadable files


def unknown_codec(folder: Path) -> str:
    """A Matroska file whose codec id no FFmpeg knows."""
    path = write_video(folder / "known.mkv", frames=5)
    data = Path(path).read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    target = folder / "unknown_codec.mkv"
    target.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/QQQ"))
    return str(target)


def cut_short(folder: Path, eighths: int) -> str:
    """An MP4 download that stopped early. FFmpeg's muxer writes the index (moov box) last, after the frames:
    cut `eighths` of the way into the index, or halfway into the frames for 0."""
    data = Path(write_video(folder / "whole.mp4", frames=30)).read_bytes()
    moov = data.index(b"moov") - 4  # the box starts with its 4-byte size
    cut = moov + eighths * (len(data) - moov) // 8 if eighths else moov // 2
    path = folder / f"cut_{eighths}.mp4"
    path.write_bytes(data[:cut])
    return str(path)


def all_damaged(folder: Path) -> str:
    path = write_video(folder / "all_damaged.avi", frames=10, codec="mjpeg", pix_fmt="yuvj420p")
    damage_frames(path, 0, 9)
    return path


def empty(folder: Path) -> str:
    (folder / "empty.mp4").write_bytes(b"")
    return str(folder / "empty.mp4")


BROKEN = {
    "missing": (lambda folder: str(folder / "nowhere.mp4"), "no such file"),
    "empty": (empty, "empty file"),
    "text": (lambda folder: write_text(folder / "notes.mp4"), "not a media file"),
    "audio only": (lambda folder: write_audio_only(folder / "sound.mp4"), "no video stream"),
    "unknown codec": (unknown_codec, "cannot decode the video stream"),
    "cut before the index": (lambda folder: cut_short(folder, 0), "not a media file FFmpeg can read, or a damaged"),
    "folder": (lambda folder: str(folder), "is a folder"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_unreadable_files_raise_one_line_video_errors(folder, kind):
    make, reason = BROKEN[kind]
    path = make(folder)
    for read in (lambda: sample_frames(path, num_frames=4), lambda: probe(path)):
        with pytest.raises(VideoError) as caught:
            read()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{path}: ") and reason in message
        assert "Errno" not in message


@pytest.mark.parametrize("eighths", range(1, 8))
def test_files_cut_short_raise_one_line_video_errors(folder, eighths):
    """Wherever the index is cut, FFmpeg fails in a different way (no streams, a data stream, end of file, no
    frames...): each must come out as a one-line VideoError."""
    path = cut_short(folder, eighths)
    for read in (lambda: sample_frames(path, num_frames=4), lambda: probe(path)):
        with pytest.raises(VideoError) as caught:
            read()
        assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{path}: ")


def test_undecodable_stream_raises_a_video_error(folder):
    path = all_damaged(folder)
    with pytest.raises(VideoError, match=r"all_damaged\.avi: no frame of the video stream could be decoded$"):
        sample_frames(path, num_frames=4)


def test_bad_arguments_are_value_errors_not_video_errors(folder):
    path = write_video(folder / "args.mp4", frames=5)
    with pytest.raises(ValueError):
        sample_frames(path)
    with pytest.raises(ValueError):
        sample_frames(path, num_frames=2, max_pixels=0)


# ---------------------------------------------------------------------------------------------- seek plan


def fake_decoding(keyframes: list[int], frames: int, undecodable: set[int] = frozenset()):
    """A stream for decode_positions: runs start at the keyframe at or before the target; logs where."""
    starts: list[int] = []

    def keyframe_before(target: int) -> int:
        return max(k for k in keyframes if k <= target)

    def run(target: int):
        starts.append(keyframe_before(target))
        return ((p, f"frame {p}") for p in range(keyframe_before(target), frames) if p not in undecodable)

    return run, keyframe_before, starts


def test_decoding_goes_on_within_a_gop_and_seeks_across_gops():
    run, keyframe_before, starts = fake_decoding([0, 10, 20, 30], 40)
    decoded = Decoded()
    decode_positions(run, keyframe_before, [2, 5, 5, 12, 19, 35, 39], str, decoded)
    assert starts == [0, 10, 30]  # GOP 20 holds no target: skipped
    assert decoded.chosen == {p: p for p in [2, 5, 12, 19, 35, 39]}
    assert decoded.pictures[12] == "frame 12"


def test_no_new_seek_when_the_demuxer_lands_early():
    """A demuxer that lands before the keyframe asked for must not make the decoder seek again and again."""
    starts: list[int] = []

    def run(target: int):
        assert len(starts) < 3, "seeking in a loop"
        starts.append(target)
        return ((p, f"frame {p}") for p in range(20))  # lands on the stream's start, whatever is asked

    decoded = Decoded()
    decode_positions(run, lambda target: 10 if target >= 10 else 0, [15], str, decoded)
    assert starts == [15] and decoded.chosen == {15: 15}


def test_undecodable_targets_take_the_nearest_decodable_frame():
    run, keyframe_before, _ = fake_decoding([0], 20, undecodable={5, 6, 7, 8, 18, 19})
    decoded = Decoded()
    decode_positions(run, keyframe_before, [5, 6, 7, 8, 10, 19], str, decoded)
    assert decoded.chosen == {5: 4, 6: 4, 7: 9, 8: 9, 10: 10, 19: 17}  # ties go to the earlier frame


def test_single_run_without_keyframes():
    run, _, starts = fake_decoding([0], 10)
    decoded = Decoded()
    decode_positions(lambda target: run(0), None, [1, 9], str, decoded)
    assert starts == [0] and decoded.chosen == {1: 1, 9: 9}


def test_a_damaged_keyframe_sends_the_search_one_gop_back():
    run, keyframe_before, starts = fake_decoding([0, 10, 20], 30, undecodable={10, 11, 12, 13, 14})
    decoded = Decoded()
    decode_positions(run, keyframe_before, [12], str, decoded)
    assert starts == [10, 0] and decoded.chosen == {12: 9}  # 9 and 15 are as near: the earlier wins


def test_a_damaged_last_frame_takes_the_one_before():
    run, keyframe_before, starts = fake_decoding(list(range(20)), 20, undecodable={19})  # intra-only
    decoded = Decoded()
    decode_positions(run, keyframe_before, [5, 19], str, decoded)
    assert starts == [5, 19, 18] and decoded.chosen == {5: 5, 19: 18}
