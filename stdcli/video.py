"""Sample the frames of a video that a Video-LLM sees, decoding as little of the video as possible.

    from stdcli.video import sample_frames
    video = sample_frames("clip.mp4", fps=2.0, min_frames=4, max_frames=768, multiple_of=2)  # Qwen2-VL's rules
    video.frames.shape  # (T, H, W, 3) uint8 RGB, upright

How (docs/video.md has the details and the benchmark):
1. One pass over the video stream's packets, without decoding, gives every frame's presentation timestamp (so the
   frame count and duration, even when the container states neither, and the order even with B-frames or a
   variable frame rate) and which frames are keyframes.
2. The wanted frames are spread evenly over the presentation order (linspace, as Qwen2-VL's and LLaVA's reference
   code do).
3. Each wanted frame is reached by seeking to the keyframe at or before it and decoding forward; when the next wanted
   frame has no keyframe between it and the decoder's position, decoding just goes on. Only wanted frames are
   converted to RGB (downscaled on the way if max_pixels asks), then turned upright per the display matrix, each
   written straight into the one array returned.
   The GOPs that hold wanted frames are decoded by several threads at once, each with its own container and
   decoder (`threads`; default one per core, up to MAX_THREADS): a GOP decodes the same wherever it is decoded.
4. A packet the decoder rejects spoils every frame decoded after it up to the next keyframe (they reference it):
   those frames are skipped, a wanted frame among them is replaced by the nearest decodable one, and
   SampledVideo.warnings says so. Damage met by any thread makes the whole video decode again on one thread, so
   that which frames are replaced, and the warnings, never depend on the number of threads.
Streams without timestamps (raw elementary streams) or that cannot seek are decoded once from the start instead.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import math
import os
import stat
import statistics
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .inputs import VIDEO_EXTENSIONS

# PyAV before 19 decodes container metadata strictly, so a tag in another encoding than UTF-8 would stop the open;
# 19 dropped the argument and decodes every tag losslessly (UTF-8 with surrogateescape) by itself.
_OPEN_OPTIONS = {"metadata_errors": "replace"} if int(av.__version__.split(".")[0]) < 19 else {}

__all__ = [
    "VIDEO_EXTENSIONS", "SampledVideo", "StatedSize", "VideoError", "choose_frame_count", "probe", "sample_frames",
    "stated_size",
]

# What PyAV raises for unreadable input: its own errors, OS errors, and ValueError (InvalidDataError is one, and so
# are pixel-format conversions it cannot do).
_READ_ERRORS = (av.error.FFmpegError, OSError, ValueError)
_FALLBACK_FPS = 25.0  # FFmpeg's own guess for a stream that states no rate
# Decoders sample_frames runs at once by default. Each holds its own reference frames (some 100 MB for 4K), and the
# Python work between frames does not run in parallel (PyAV holds Python's lock while it wraps a frame), so more
# decoders gain less and less; callers can ask for more with `threads`.
MAX_THREADS = 8


class VideoError(Exception):
    """A video that cannot be read. str(err) is one line naming the file and the reason, e.g. "clip.mp4: no video
    stream" (never a traceback, never a multi-line PyAV message)."""


@dataclass
class SampledVideo:
    path: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, upright (display matrix applied)
    indices: list[int]  # index of each returned frame in presentation order within the stream
    timestamps: list[float]  # seconds from the stream's first frame, presentation time of each returned frame
    source_fps: float  # average frame rate of the stream (frames / duration if it states none)
    duration: float  # seconds (measured from the packets if the stream states none)
    num_source_frames: int  # frames in the stream, counted from its packets
    warnings: list[str] = field(default_factory=list)  # one line each, e.g. a damaged stretch that was skipped

    @property
    def sample_fps(self) -> float:
        """Effective sampling rate, frames returned per second of video (Qwen2.5-VL's temporal ids use it)."""
        return len(self.frames) / self.duration


# ---------------------------------------------------------------------------------------------- how many, which


def choose_frame_count(
    duration: float,
    num_source_frames: int,
    *,
    fps: float | None,
    num_frames: int | None,
    min_frames: int,
    max_frames: int,
    multiple_of: int = 1,
) -> int:
    """How many frames to sample.

    num_frames (exact) wins. Otherwise round(duration * fps), clamped to [min_frames, max_frames] (bounds moved
    inwards to multiples of `multiple_of`), rounded down to a multiple of `multiple_of` (Qwen2-VL: 2, its temporal
    patch), and never more than the video has, rounded down to the multiple, but at least `multiple_of`: a clip with
    fewer frames gets some repeated, as Qwen's reference code does.
    """
    check_request(fps=fps, num_frames=num_frames, min_frames=min_frames, max_frames=max_frames, multiple_of=multiple_of)
    if num_source_frames < 1:
        raise ValueError(f"num_source_frames must be at least 1, got {num_source_frames}")
    if num_frames is not None:
        return num_frames
    assert fps is not None  # check_request: one of them is given
    low, high = _ceil_to(min_frames, multiple_of), _floor_to(max_frames, multiple_of)
    count = _floor_to(min(max(round(duration * fps), low), high), multiple_of)
    return max(multiple_of, min(count, _floor_to(num_source_frames, multiple_of)))


def check_request(
    *, fps: float | None, num_frames: int | None, min_frames: int, max_frames: int, multiple_of: int
) -> None:
    """ValueError for sampling arguments that make no sense (a caller's mistake, not the video's)."""
    if fps is None and num_frames is None:
        raise ValueError("give fps or num_frames")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be at least 1, got {multiple_of}")
    if min_frames < 1 or _ceil_to(min_frames, multiple_of) > _floor_to(max_frames, multiple_of):
        raise ValueError(
            f"no frame count that is a multiple of {multiple_of} lies in [min_frames, max_frames] = "
            f"[{min_frames}, {max_frames}]"
        )


def _ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _floor_to(n: int, multiple: int) -> int:
    return n // multiple * multiple


def target_indices(num_source_frames: int, count: int) -> list[int]:
    """`count` presentation indices spread evenly over the stream, first and last frame included (repeats when the
    stream has fewer frames): linspace rounded, as Qwen2-VL's and LLaVA's reference code do."""
    return np.linspace(0, num_source_frames - 1, count).round().astype(int).tolist()


# ---------------------------------------------------------------------------------------------- opening, errors


def _file_kind(mode: int) -> str:
    """What a path that is not a regular file is, for the error message."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


def _open(path: str) -> av.container.InputContainer:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file") from None
    except OSError as error:
        raise VideoError(f"{path}: cannot open: {_reason(error)}") from error
    # never opened: reading a FIFO or /dev/zero would block or never end, and neither can seek
    if not stat.S_ISREG(info.st_mode):
        raise VideoError(f"{path}: is {_file_kind(info.st_mode)}, not a video file")
    if info.st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(path, **_OPEN_OPTIONS)
    except av.error.InvalidDataError as error:
        raise VideoError(f"{path}: not a media file FFmpeg can read, or a damaged one ({_reason(error)})") from error
    except av.error.EOFError as error:
        raise VideoError(f"{path}: the file ends too early (truncated or damaged)") from error
    except _READ_ERRORS as error:
        raise VideoError(f"{path}: cannot open: {_reason(error)}") from error


def _reason(error: BaseException) -> str:
    """PyAV's message without its errno and call site: "Invalid data found when processing input"."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first video stream that is a video (not cover art) and that this FFmpeg can decode."""
    if not container.streams:  # e.g. an MP4 cut short before its index (the moov box, often at the end)
        raise VideoError(f"{path}: no streams found (a damaged or truncated file?)")
    videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not videos:
        raise VideoError(f"{path}: no video stream")
    decodable = [s for s in videos if s.codec_context is not None]
    if not decodable:
        raise VideoError(f"{path}: cannot decode the video stream (codec unknown to this FFmpeg build)")
    return decodable[0]


# ---------------------------------------------------------------------------------------------- the packet index


@dataclass(frozen=True)
class StreamIndex:
    """What one pass over the stream's packets, without decoding, says about its frames.

    Position i is the i-th frame in presentation order; pts[i] its timestamp. Streams whose packets carry no
    timestamps (raw elementary streams) are untimed: pts are positions and frames are found by counting.
    Containers that store only decoding times (AVI) give B-frame streams timestamps in decoding order, which the
    decoder then hands out with frames in presentation order, mismatched: such streams are `counted`, frames are
    placed by counting from the keyframe a run starts at (the decoder outputs presentation order).
    """

    pts: list[int]
    keyframes: list[int]  # positions of keyframes, ascending
    start_dts: int  # the first packet's decoding timestamp: seeking there reaches the stream's start
    time_base: Fraction
    duration: float
    fps: float
    timed: bool
    warnings: list[str]
    counted: bool = False

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    def position(self, pts: int) -> int:
        """Position of the frame with this timestamp (the nearest one if no frame has exactly it)."""
        i = bisect.bisect_left(self.pts, pts)
        if i == len(self.pts) or (i > 0 and pts - self.pts[i - 1] < self.pts[i] - pts):
            return i - 1
        return i

    def seconds(self, position: int) -> float:
        if not self.timed:
            return position / self.fps
        return float((self.pts[position] - self.pts[0]) * self.time_base)

    def keyframe_before(self, position: int) -> int:
        """Position of the last keyframe at or before `position`, -1 if none."""
        i = bisect.bisect_right(self.keyframes, position)
        return self.keyframes[i - 1] if i else -1


def index_stream(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> StreamIndex:
    """Demux (not decode) the whole video stream once; see StreamIndex."""
    pts: list[int] = []
    durations: dict[int, int] = {}
    keyframe_pts: list[int] = []
    start_dts: int | None = None
    untimed = 0
    reordered = False  # whether any timestamp goes back in decoding order: the container knows presentation times
    warnings = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # end-of-stream marker; frames an edit list cuts
                continue
            timestamp = _timestamp(packet)
            if timestamp is None:
                untimed += 1
                continue
            if start_dts is None:
                start_dts = packet.dts if packet.dts is not None else timestamp
            reordered = reordered or (bool(pts) and timestamp < pts[-1])
            pts.append(timestamp)
            durations[timestamp] = packet.duration or 0
            if packet.is_keyframe:
                keyframe_pts.append(timestamp)
    except _READ_ERRORS as error:  # damaged container structure: keep what could be read
        warnings.append(f"stopped reading after {len(pts) + untimed} frames: {_reason(error)}")
    if untimed:
        return _untimed_index(stream, len(pts) + untimed, warnings)
    pts = sorted(set(pts))
    time_base = stream.time_base or Fraction(1, 1)
    positions = {t: i for i, t in enumerate(pts)}
    duration = _duration(stream, pts, durations, time_base)
    rate = float(stream.average_rate or 0) or (len(pts) / duration if pts else _FALLBACK_FPS)
    keyframes = sorted(positions[t] for t in keyframe_pts)
    counted = bool(stream.codec_context.has_b_frames) and not reordered
    return StreamIndex(pts, keyframes, start_dts or 0, time_base, duration, rate, True, warnings, counted)


def _timestamp(item: av.Packet | av.VideoFrame) -> int | None:
    """Presentation timestamp; the decoding one when there is none (the same for streams without reordering)."""
    return item.pts if item.pts is not None else item.dts


def _indexed(
    container: av.container.InputContainer, path: str
) -> tuple[av.video.stream.VideoStream, StreamIndex]:
    stream = _video_stream(container, path)
    index = index_stream(container, stream)
    if not index.num_frames:
        raise VideoError(f"{path}: the video stream has no frames (a damaged or truncated file?)")
    return stream, index


def _untimed_index(stream: av.video.stream.VideoStream, count: int, warnings: list[str]) -> StreamIndex:
    # The rate the codec states (e.g. H.264 VUI) is better here than the demuxer's default 25 fps.
    rate = float(stream.guessed_rate or stream.average_rate or _FALLBACK_FPS)
    return StreamIndex(list(range(count)), [], 0, Fraction(1, 1), count / rate, rate, False, warnings)


def _duration(stream: av.video.stream.VideoStream, pts: list[int], durations: dict[int, int], time_base) -> float:
    """The stream's stated duration, else first to last frame plus the last frame's own duration."""
    if stream.duration and stream.duration > 0:
        return float(stream.duration * time_base)
    if not pts:
        return 0.0
    last = durations[pts[-1]] or (statistics.median(b - a for a, b in itertools.pairwise(pts)) if len(pts) > 1 else 0)
    seconds = float((pts[-1] - pts[0] + last) * time_base)
    return seconds if seconds > 0 else len(pts) / float(stream.average_rate or _FALLBACK_FPS)


# ---------------------------------------------------------------------------------------------- decoding


def decodable_frames(
    packets: Iterable[av.Packet],
    stream: av.video.stream.VideoStream,
    position_of: Callable[[int], int] | None,
    damaged: set[int],
    first_position: int = 0,
    rejected: Callable[[], None] | None = None,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode `packets`, yield (position, frame) for each frame that decoded cleanly, in presentation order.

    A packet the decoder rejects spoils the frames decoded after it up to the next keyframe, since they reference
    it: decoders conceal the error and still output them, as garbage, without flagging them. Damage often starts a
    little earlier than the decoder notices (a damaged packet it accepts, B-frames that reference it), so frames
    that come out while spoiled, or out of presentation order (which a healthy decoder never does), are not trusted
    either. Such frames' positions go to `damaged` and they are not yielded. `position_of` maps a timestamp to a
    position; None for an untimed or counted stream, whose frames are counted from the first packet given, which
    is at `first_position`. `rejected()`, if given, is told of each packet the decoder rejects.
    """
    spoiled = False
    spoiled_pts: set[int] = set()
    counted = itertools.count(first_position)
    latest = -1  # the furthest position output so far
    for packet in packets:
        if packet.is_keyframe:
            spoiled = False
        try:
            frames = stream.decode(packet)
        except av.error.FFmpegError:
            spoiled, frames = True, []
            if rejected is not None:
                rejected()
        if spoiled and position_of and _timestamp(packet) is not None:
            spoiled_pts.add(_timestamp(packet))
            damaged.add(position_of(_timestamp(packet)))
        for frame in frames:
            timestamp = _timestamp(frame)
            if position_of is None:
                position = next(counted)
            elif timestamp is None:
                continue  # cannot be placed; a wanted frame missing is replaced by its nearest neighbour
            else:
                position = position_of(timestamp)
            bad = spoiled or timestamp in spoiled_pts or frame.is_corrupt or position <= latest
            latest = max(latest, position)
            if bad:
                damaged.add(position)
                continue
            yield position, frame


class CannotSeek(Exception):
    """The container cannot seek (e.g. a raw stream): decode from the start instead."""


def packets_from_keyframe(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, index: StreamIndex, target: int
) -> Iterator[av.Packet]:
    """The stream's packets from a keyframe at or before position `target` on.

    Containers without a seek index (MPEG-TS, cue-less Matroska) seek approximately: they may land after the
    target, or on a frame that is not a keyframe (whose packets are dropped up to the next keyframe, as decoding
    cannot start there). Landing after the target, an earlier keyframe is tried, going back twice as far each time,
    down to the stream's first packet.
    """
    keyframe = bisect.bisect_right(index.keyframes, target) - 1  # in index.keyframes; -1: the stream's start
    step = 1
    while True:
        start = index.pts[index.keyframes[keyframe]] if keyframe >= 0 else index.start_dts
        try:
            container.seek(start, stream=stream, backward=True)
        except av.error.FFmpegError as error:
            raise CannotSeek(_reason(error)) from error
        packets = container.demux(stream)
        if index.keyframes:  # (a stream whose demuxer flags no keyframe is decoded as it comes)
            packets = itertools.dropwhile(lambda p: not p.is_keyframe, packets)
        first = next(packets, None)
        landed_after = first is None or (_timestamp(first) is not None and index.position(_timestamp(first)) > target)
        if keyframe < 0 or not landed_after:
            return iter(()) if first is None else itertools.chain([first], packets)
        keyframe, step = max(keyframe - step, -1), step * 2


class Undecodable(Exception):
    """Not one frame of the stream decodes."""


@dataclass
class Decoded:
    """The outcome of decoding the wanted positions."""

    pictures: dict[int, int] = field(default_factory=dict)  # position -> what `picture` made of it (Pictures: a slot)
    chosen: dict[int, int] = field(default_factory=dict)  # wanted position -> position of the frame returned
    damaged: set[int] = field(default_factory=set)  # positions found undecodable on the way


def decode_positions(
    run: Callable[[int], Iterator[tuple[int, av.VideoFrame]]],
    keyframe_before: Callable[[int], int] | None,
    wanted: Iterable[int],
    picture: Callable[[av.VideoFrame], int],
    decoded: Decoded,
) -> None:
    """Settle every wanted position with a decoded frame: its own, or the nearest decodable one.

    run(target) decodes from the keyframe at or before `target` on (keyframe_before(target)); a new run starts only
    when the next target's keyframe lies beyond what the current run has reached, since jumping there skips
    decoding what lies between. When nothing decodes from a run's keyframe up to its target (a damaged keyframe),
    the GOP before is decoded too, as the nearest decodable frame may lie there. keyframe_before None: a single run
    from the start. Frames become pictures only when chosen.
    """
    pending = sorted(set(wanted))
    before: tuple[int, av.VideoFrame] | None = None  # the last clean frame; it lies before every pending position
    frames: Iterator[tuple[int, av.VideoFrame]] | None = None
    start = reached = -1  # the keyframe the current run started from; the furthest position it has reached

    def must_seek(target: int) -> bool:
        return frames is None or (keyframe_before is not None and keyframe_before(target) > reached)

    def look_back() -> bool:
        """Start a run one GOP earlier if frames between the last clean one and this run's keyframe went unseen."""
        nonlocal frames, start
        if keyframe_before is None or start <= 0 or (before is not None and before[0] >= start - 1):
            return False
        start = keyframe_before(start - 1)
        frames = run(start)
        return True

    i = 0
    while i < len(pending):
        if must_seek(pending[i]):
            start = reached = keyframe_before(pending[i]) if keyframe_before else -1
            frames = run(pending[i])
        for position, frame in frames:
            reached = max(reached, position)
            if position > pending[i] and look_back():
                break
            while i < len(pending) and pending[i] <= position:
                _choose(decoded, pending[i], _nearest(before, (position, frame), pending[i]), picture)
                i += 1
            before = (position, frame)
            if i == len(pending) or must_seek(pending[i]):
                break
        else:  # end of the stream: what is still pending lies past the last decodable frame
            if look_back():
                continue
            if before is None:
                raise Undecodable("no frame of the video stream could be decoded")
            for target in pending[i:]:
                _choose(decoded, target, before, picture)
            i = len(pending)


def _nearest(
    before: tuple[int, av.VideoFrame] | None, after: tuple[int, av.VideoFrame], target: int
) -> tuple[int, av.VideoFrame]:
    return after if before is None or after[0] - target < target - before[0] else before


def _choose(
    decoded: Decoded, target: int, found: tuple[int, av.VideoFrame], picture: Callable[[av.VideoFrame], int]
) -> None:
    position, frame = found
    decoded.chosen[target] = position
    if position not in decoded.pictures:
        decoded.pictures[position] = picture(frame)


# ---------------------------------------------------------------------------------------------- pictures


class Pictures:
    """Turns decoded frames into upright RGB pictures, written straight into one preallocated array, `frames`, of
    `capacity` slots, all of the first frame's size (downscaled to max_pixels).

    The size and the display matrix are taken from the first frame, so that a stream that changes resolution
    mid-way still fits in one array. Writing each picture into its slot as it is converted, rather than stacking
    them at the end, keeps one copy of the frames in memory instead of two (stacking 1,200 720p frames took longer
    than decoding them).
    """

    def __init__(self, max_pixels: int | None, capacity: int):
        self.max_pixels = max_pixels
        self.capacity = capacity
        self.frames: np.ndarray | None = None
        self.size: tuple[int, int] | None = None
        self.orientation = (False, False, False)

    def writer(self, first_slot: int = 0) -> Callable[[av.VideoFrame], int]:
        """A `picture` for decode_positions: converts each frame it is given into the next slot, from first_slot
        on, and returns the slot. One per thread: its swscale context is not thread-safe, and it is kept from frame
        to frame (frame.to_ndarray builds one per frame, which cost more than converting a 224x224 frame)."""
        slots = itertools.count(first_slot)
        reformatter = VideoReformatter()

        def write(frame: av.VideoFrame) -> int:
            if self.frames is None:
                self._start(frame)
            assert self.frames is not None and self.size is not None
            slot = next(slots)
            width, height = self.size
            # threads=1: pictures are converted in parallel by the decoding threads already; swscale's own threads
            # measured slower, and their output is the same (tests/test_video_threads.py compares)
            rgb = reformatter.reformat(frame, width, height, "rgb24", interpolation="AREA", threads=1).to_ndarray()
            self.frames[slot] = orient(rgb, self.orientation)
            return slot

        return write

    def _start(self, frame: av.VideoFrame) -> None:
        self.size = scaled_size(frame.width, frame.height, self.max_pixels)
        self.orientation = orientation(display_matrix(frame))
        width, height = self.size
        shape = (height, width) if not self.orientation[0] else (width, height)
        self.frames = np.empty((self.capacity, *shape, 3), np.uint8)

    def gather(self, slots: list[int]) -> np.ndarray:
        """The pictures in these slots, in this order: the array itself when that is every slot in order (the usual
        case), else a copy (repeated frames, or damage that made several wanted frames take the same one)."""
        assert self.frames is not None
        return self.frames if slots == list(range(self.capacity)) else self.frames[slots]


def scaled_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) shrunk, keeping the aspect ratio, to an area of at most max_pixels."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's display matrix (FFmpeg's 3x3 int32 layout, a b u / c d v / x y w), None if it has none."""
    side_data = frame.side_data.get("DISPLAYMATRIX")
    return tuple(np.frombuffer(bytes(side_data), np.int32).tolist()) if side_data is not None else None


def orientation(matrix: Sequence[int] | None) -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns) that show a picture as the display matrix says, to the nearest quarter
    turn; covers the 8 EXIF orientations (rotations and mirrorings), as FFmpeg's own autorotation does.

    The matrix maps a stored pixel (x, y) to (a x + c y, b x + d y) on screen: with a = d = 0, x and y swap.
    """
    if matrix is None:
        return False, False, False
    a, b, _, c, d = matrix[:5]
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return False, d < 0, a < 0
    return True, b < 0, c < 0


def orient(picture: np.ndarray, how: tuple[bool, bool, bool]) -> np.ndarray:
    transpose, flip_rows, flip_columns = how
    if transpose:
        picture = picture.transpose(1, 0, 2)
    if flip_rows:
        picture = picture[::-1]
    if flip_columns:
        picture = picture[:, ::-1]
    return picture


# ---------------------------------------------------------------------------------------------- public entry points


def sample_frames(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    min_frames: int = 1,
    max_frames: int = 768,
    multiple_of: int = 1,
    max_pixels: int | None = None,
    admit: Callable[[int, int, int], None] | None = None,
    threads: int | None = None,
) -> SampledVideo:
    """Sample frames spread evenly over the video: num_frames of them, or `fps` per second within the bounds (see
    choose_frame_count). Raises VideoError (one line) for a video that cannot be read, ValueError for bad arguments.
    `admit(count, height, width)` is told how many frames of which size are about to be decoded, before any is:
    it may raise to refuse what would not fit. `threads`: how many decoders may run at once, each on its own
    stretch of the video (None: one per CPU core, at most MAX_THREADS); the frames are the same whatever it is.
    """
    check_request(fps=fps, num_frames=num_frames, min_frames=min_frames, max_frames=max_frames, multiple_of=multiple_of)
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    workers = threads or min(available_cores(), MAX_THREADS)
    path = os.fspath(path)
    with _open(path) as container:
        try:
            stream, index = _indexed(container, path)
            count = choose_frame_count(
                index.duration,
                index.num_frames,
                fps=fps,
                num_frames=num_frames,
                min_frames=min_frames,
                max_frames=max_frames,
                multiple_of=multiple_of,
            )
            if admit is not None and stream.width and stream.height:
                width, height = scaled_size(stream.width, stream.height, max_pixels)
                admit(count, height, width)
            wanted = target_indices(index.num_frames, count)
            pictures = Pictures(max_pixels, capacity=len(set(wanted)))
            decoded = _decode(path, container, stream, index, wanted, pictures, workers)
        except Undecodable as error:
            raise VideoError(f"{path}: {error}") from error
        except _READ_ERRORS as error:
            raise VideoError(f"{path}: cannot decode the video: {_reason(error)}") from error
    chosen = [decoded.chosen[w] for w in wanted]
    return SampledVideo(
        path=path,
        frames=pictures.gather([decoded.pictures[p] for p in chosen]),
        indices=chosen,
        timestamps=[index.seconds(p) for p in chosen],
        source_fps=index.fps,
        duration=index.duration,
        num_source_frames=index.num_frames,
        warnings=index.warnings + damage_warnings(index, decoded),
    )


def _decode(
    path: str,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: StreamIndex,
    wanted: list[int],
    pictures: Pictures,
    workers: int,
) -> Decoded:
    """Seek to each wanted frame, with `workers` decoders at once where that returns the same frames (see
    _decode_in_parallel). An untimed stream, or one whose container turns out unable to seek, is decoded once from
    the start instead, reopened (the index pass read it to the end)."""
    if index.timed:
        if workers > 1:
            decoded = _decode_in_parallel(path, container, stream, index, wanted, pictures, workers)
            if decoded is not None:
                return decoded
            # sequentially, then, into the same pictures: their size and orientation came from the first wanted
            # frame, decoded as this pass decodes it
        decoded = Decoded()
        try:
            run = _seeking_runs(container, stream, index, decoded.damaged)
            decode_positions(run, index.keyframe_before, wanted, pictures.writer(), decoded)
            return decoded
        except CannotSeek:
            pass
    with _open(path) as again:
        stream = _video_stream(again, path)
        decoded = Decoded()
        position_of = index.position if index.timed and not index.counted else None

        def run_once(_: int) -> Iterator[tuple[int, av.VideoFrame]]:
            return decodable_frames(again.demux(stream), stream, position_of, decoded.damaged)

        decode_positions(run_once, None, wanted, pictures.writer(), decoded)
        return decoded


def _seeking_runs(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: StreamIndex,
    damaged: set[int],
    rejected: Callable[[], None] | None = None,
) -> Callable[[int], Iterator[tuple[int, av.VideoFrame]]]:
    """`run` for decode_positions: decodes from the keyframe at or before the target on (see decodable_frames)."""

    def run(target: int) -> Iterator[tuple[int, av.VideoFrame]]:
        packets = packets_from_keyframe(container, stream, index, target)
        if not index.counted:
            return decodable_frames(packets, stream, index.position, damaged, rejected=rejected)
        first = next(packets, None)
        if first is None:
            return iter(())
        start = index.position(_timestamp(first)) if _timestamp(first) is not None else 0
        return decodable_frames(itertools.chain([first], packets), stream, None, damaged, start, rejected)

    return run


# ---------------------------------------------------------------------------------------------- decoding in parallel


def _decode_in_parallel(
    path: str,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: StreamIndex,
    wanted: list[int],
    pictures: Pictures,
    workers: int,
) -> Decoded | None:
    """What the sequential pass decodes, with up to `workers` decoders at once; None where that might differ.

    The sequential pass decodes each GOP that holds wanted frames from its keyframe (a seek) up to its last wanted
    frame, and only carries what it learnt from one GOP to the next when frames were missing or damaged (the
    nearest decodable frame, the GOP before a damaged keyframe). So each such GOP is decoded on its own, by
    whichever thread is free, each thread with its own container and decoder, and written into its own slots. Only
    a GOP that decoded plainly counts (one run, nothing damaged, every wanted frame found as itself): anything else
    returns None and the caller decodes sequentially, which handles damage exactly as before.

    The first wanted frame is decoded alone first, on the caller's container: its frame sets the pictures' size and
    orientation, as in the sequential pass. Decoder threads inside one decoder (frame threading) are not used: they
    report a damaged packet's error a few frames late, which let a garbage frame through as a good one.
    """
    targets = sorted(set(wanted))
    units = _units(targets, index.keyframe_before)
    first = _decode_unit(container, stream, index, units[0], pictures.writer(0))
    if first is None:
        return None
    slots = itertools.accumulate(len(unit) for unit in units[:-1])  # a unit's first slot: where the one before ends
    pending = collections.deque(zip(slots, units[1:], strict=True))
    results = [first]
    failed = threading.Event()

    def drain() -> None:
        """Decode units until none is left or one did not decode plainly (then the others stop too)."""
        try:
            own = _open(path)
            own_stream = _video_stream(own, path)
        except VideoError:  # the file went away, or changed, since it was indexed
            failed.set()
            return
        with own:
            while not failed.is_set():
                try:
                    slot, unit = pending.popleft()  # atomic: no lock needed
                except IndexError:
                    return
                result = _decode_unit(own, own_stream, index, unit, pictures.writer(slot))
                if result is None:
                    failed.set()
                else:
                    results.append(result)

    count = min(workers, len(pending))
    if count:
        with ThreadPoolExecutor(count) as pool:
            for future in [pool.submit(drain) for _ in range(count)]:
                future.result()  # re-raises what is not a read error: a bug must not pass for a fallback
    return None if failed.is_set() else _merged(results)


def _units(targets: list[int], keyframe_before: Callable[[int], int]) -> list[list[int]]:
    """The sorted targets in the runs the sequential pass makes: one per keyframe, the first target alone."""
    return [targets[:1]] + [list(group) for _, group in itertools.groupby(targets[1:], keyframe_before)]


def _decode_unit(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    index: StreamIndex,
    targets: list[int],
    picture: Callable[[av.VideoFrame], int],
) -> Decoded | None:
    """Decode targets that share a keyframe; None unless that went plainly: a single run, no packet rejected, no
    frame damaged, every target found as itself (the sequential pass then decodes them the same way). A rejected
    packet counts on its own: in a counted stream it may spoil no frame that comes out, yet decoded on another
    decoder, whose output lags differently, it may."""
    decoded = Decoded()
    runs = rejections = 0

    def reject() -> None:
        nonlocal rejections
        rejections += 1

    seeking = _seeking_runs(container, stream, index, decoded.damaged, reject)

    def run(target: int) -> Iterator[tuple[int, av.VideoFrame]]:
        nonlocal runs
        runs += 1
        return seeking(target)

    try:
        decode_positions(run, index.keyframe_before, targets, picture, decoded)
    except (CannotSeek, Undecodable, *_READ_ERRORS):
        return None
    plain = runs == 1 and not rejections and not decoded.damaged and all(decoded.chosen[t] == t for t in targets)
    return decoded if plain else None


def _merged(parts: list[Decoded]) -> Decoded:
    merged = Decoded()
    for part in parts:
        merged.pictures.update(part.pictures)
        merged.chosen.update(part.chosen)
    return merged


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def damage_warnings(index: StreamIndex, decoded: Decoded) -> list[str]:
    """One line per stretch of frames that could not be decoded, saying how many sampled frames it cost."""
    replaced = {w for w, p in decoded.chosen.items() if w != p}
    lines = []
    for first, last in stretches(decoded.damaged | replaced):
        span = f"frame {first}" if first == last else f"frames {first}-{last}"
        line = f"{span} ({index.seconds(first):.2f}-{index.seconds(last):.2f} s) could not be decoded, skipped"
        hit = sum(first <= w <= last for w in replaced)
        if hit:
            line += f"; {hit} sampled frame{'s' if hit > 1 else ''} taken from the nearest decodable frame"
        lines.append(line)
    return lines


def stretches(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Runs of consecutive positions, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for p in sorted(positions):
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def probe(path: str | os.PathLike) -> dict:
    """Cheap metadata, for listing: duration (s), fps, frames, width and height as displayed (rotation applied),
    rotation (degrees anticlockwise, as FFmpeg reports it), codec. Reads the packets and decodes one frame."""
    path = os.fspath(path)
    with _open(path) as container:
        try:
            stream, index = _indexed(container, path)
            codec = stream.codec_context.name
        except _READ_ERRORS as error:
            raise VideoError(f"{path}: cannot read the video: {_reason(error)}") from error
    with _open(path) as container:  # again, from the start: the display matrix comes with decoded frames
        try:
            stream = _video_stream(container, path)
            first = next(decodable_frames(container.demux(stream), stream, None, set()), None)
        except _READ_ERRORS as error:
            raise VideoError(f"{path}: cannot decode the video: {_reason(error)}") from error
    frame = first[1] if first else None
    width, height = (frame.width, frame.height) if frame else (stream.width, stream.height)
    transpose = orientation(display_matrix(frame) if frame else None)[0]
    return {
        "duration": index.duration,
        "fps": index.fps,
        "frames": index.num_frames,
        "width": height if transpose else width,
        "height": width if transpose else height,
        "rotation": frame.rotation if frame else 0,
        "codec": codec,
    }


@dataclass(frozen=True)
class StatedSize:
    """What a container's header says of its video stream, 0 where it says nothing."""

    duration: float  # seconds
    frames: int
    width: int
    height: int


def stated_size(path: str | os.PathLike) -> StatedSize:
    """The video stream's size as the container's header states it, without reading a packet or decoding: an
    estimate of the work a video asks (a frame count missing from the header is duration x frame rate), not what
    sample_frames finds. Raises VideoError for a file that cannot be opened."""
    path = os.fspath(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = (container.duration or 0) / av.time_base
        frames = stream.frames or round(duration * float(stream.average_rate or stream.guessed_rate or 0))
        return StatedSize(max(duration, 0.0), max(frames, 0), stream.width or 0, stream.height or 0)
