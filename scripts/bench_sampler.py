"""Benchmark: `sample_frames(path, num_frames=32)` against decoding every frame, on a 10-minute 720p H.264 video.

    python scripts/bench_sampler.py --cache-dir /tmp/stdcli-bench --json bench.json

The video is generated once into the cache dir (about 3 minutes on 2 cores): 1280x720, 30 fps, libx264 ultrafast
with the encoder's default GOP (keyint 250), a scrolling textured background with a moving block, so that decoding
costs about what it costs for real footage of that bitrate. Each method gets a warm-up run (file in the page
cache), then the median of --repeats timed runs is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from stdcli.video import sample_frames

WIDTH, HEIGHT, FPS, MINUTES = 1280, 720, 30, 10


def bench_video(cache_dir: Path) -> Path:
    """The benchmark video, generated on first use."""
    path = cache_dir / f"bench_{WIDTH}x{HEIGHT}_{FPS}fps_{MINUTES}min.mp4"
    if not path.exists():
        partial = path.with_suffix(".partial.mp4")
        started = time.perf_counter()
        write_bench_video(partial)
        partial.rename(path)
        print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s")
    return path


def write_bench_video(path: Path) -> None:
    # Frames are built directly in yuv420p (no RGB conversion): a grey texture twice the frame's size scrolls
    # diagonally, a bright block moves across it, chroma is flat.
    texture = np.random.default_rng(0).integers(40, 200, (HEIGHT // 8, WIDTH // 8), dtype=np.uint8)
    texture = np.tile(np.kron(texture, np.ones((8, 8), np.uint8)), (2, 2))
    chroma = np.full((HEIGHT // 2, WIDTH), 128, np.uint8)  # U and V planes, stacked as yuv420p's ndarray layout
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(MINUTES * 60 * FPS):
            x, y = (3 * i) % WIDTH, (2 * i) % HEIGHT
            luma = texture[y : y + HEIGHT, x : x + WIDTH].copy()
            bx, by = (7 * i) % (WIDTH - 160), (5 * i) % (HEIGHT - 160)
            luma[by : by + 160, bx : bx + 160] = 235
            frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def decode_everything(path: Path) -> int:
    """What a naive sampler does: decode every frame to RGB, keep the ones it wants."""
    count = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count


def sample_32(path: Path) -> int:
    return len(sample_frames(path, num_frames=32).frames)


def median_seconds(run: Callable[[], int], repeats: int) -> tuple[float, list[float]]:
    run()  # warm-up: file in the page cache, codec initialised
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "stdcli-bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    path = bench_video(args.cache_dir)

    sampled, sampled_times = median_seconds(lambda: sample_32(path), args.repeats)
    full, full_times = median_seconds(lambda: decode_everything(path), args.repeats)
    ratio = full / sampled
    with av.open(str(path)) as container:
        frames = container.streams.video[0].frames

    print(f"video: {path.name}, {frames} frames, {path.stat().st_size / 1e6:.0f} MB")
    print(f"{'method':<36}{'median s':>10}   runs")
    print(f"{'sample_frames(num_frames=32)':<36}{sampled:>10.3f}   {', '.join(f'{t:.3f}' for t in sampled_times)}")
    print(f"{'decode every frame to RGB':<36}{full:>10.3f}   {', '.join(f'{t:.3f}' for t in full_times)}")
    print(f"speedup: {ratio:.1f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "video": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": frames, "codec": "h264"},
                    "sample_frames_32_s": sampled,
                    "sample_frames_32_runs_s": sampled_times,
                    "decode_all_s": full,
                    "decode_all_runs_s": full_times,
                    "speedup": ratio,
                    "pyav": av.__version__,
                    "python": platform.python_version(),
                    "machine": platform.platform(),
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
