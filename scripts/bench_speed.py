"""Benchmark: how long `sample_frames` takes to load many frames of a long video, by number of decoder threads.

    python scripts/bench_speed.py --cache-dir /tmp/stdcli-bench [--baseline old_video.py] [--threads 1 2 8]

Two videos, generated once into the cache dir:
- "8 min 224x224": the generated world's long clip (`generate_clip(0, "long", 480.0)`, 8 fps, 3,840 frames, x264
  with its default B-frames and GOP), sampled with num_frames=1920;
- "10 min 720p": scripts/bench_sampler.py's 1280x720 30 fps H.264 video (18,000 frames, a keyframe every 250),
  sampled at fps=2 (1,200 frames; max_frames raised from Qwen2-VL's 768 so that all 1,200 are taken).

Each configuration gets a warm-up run (file in the page cache), then the median of --repeats runs is reported.
--baseline times another copy of stdcli/video.py too (e.g. `git show HEAD~1:stdcli/video.py > old_video.py`; its
relative import is rewritten), and checks that it returns the same frames.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout's stdcli, not an installed one; bench_sampler
from bench_sampler import bench_video  # noqa: E402

from stdcli import video as video_module  # noqa: E402
from stdcli.world import generate_clip, write_video  # noqa: E402

REQUESTS = {
    "8 min 224x224": dict(num_frames=1920),
    "10 min 720p": dict(fps=2.0, max_frames=2000),
}


def long_clip(cache_dir: Path) -> Path:
    path = cache_dir / "world_long_480s_224_8fps.mp4"
    if not path.exists():
        partial = path.with_suffix(".partial.mp4")
        write_video(generate_clip(0, "long", 480.0), partial, fps=8.0, size=(224, 224))
        partial.rename(path)
    return path


def load_baseline(path: Path):
    """Another version of stdcli/video.py, imported as a module of its own."""
    source = path.read_text().replace("from .inputs import", "from stdcli.inputs import")
    copy = Path(tempfile.mkdtemp()) / "baseline_video.py"
    copy.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_video", copy)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def timed(sample, path: Path, request: dict, repeats: int) -> tuple[float, list[float], np.ndarray]:
    frames = sample(path, **request).frames  # warm-up
    times = []
    for _ in range(repeats):
        del frames  # not two copies of the frames at once
        started = time.perf_counter()
        frames = sample(path, **request).frames
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "stdcli-bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 0], help="0: automatic (the default)")
    parser.add_argument("--baseline", type=Path, help="another stdcli/video.py to time, e.g. the one before")
    parser.add_argument("--only", choices=sorted(REQUESTS), help="one of the two videos")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    videos = {"8 min 224x224": long_clip(args.cache_dir), "10 min 720p": bench_video(args.cache_dir)}
    cores = video_module.available_cores()
    print(f"{platform.processor() or platform.machine()}, {cores} cores available, Python {platform.python_version()}")
    for name, path in videos.items():
        if args.only and name != args.only:
            continue
        request = REQUESTS[name]
        reference = None
        if args.baseline:
            median, times, reference = timed(load_baseline(args.baseline).sample_frames, path, request, args.repeats)
            print(f"{name:<15} baseline             {median:8.3f} s   runs {', '.join(f'{t:.3f}' for t in times)}")
        for threads in args.threads:
            label = f"threads={threads or f'auto ({min(cores, video_module.MAX_THREADS)})'}"
            sample = functools.partial(video_module.sample_frames, threads=threads or None)
            median, times, frames = timed(sample, path, request, args.repeats)
            same = "" if reference is None else ("  same frames" if np.array_equal(frames, reference) else "  DIFFER")
            print(f"{name:<15} {label:<20} {median:8.3f} s   runs {', '.join(f'{t:.3f}' for t in times)}{same}")
            del frames
        del reference
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
