"""A whole `stdcli ask FOLDER` run with --prefetch against --no-prefetch, side by side in one run: the time from
starting the command to its exit, model loading included, as a user waits for it. With --baseline, also the same
command run by an older checkout of stdcli (a folder holding its `stdcli` package, e.g. made with
`git archive COMMIT stdcli | tar -x -C DIR`), with its own defaults.

    python scripts/bench_folder.py --cache-dir /tmp/stdcli-bench --clips 4 --minutes 1 --frames 64 --repeats 3

The clips are generated videos of the built-in model's world (stdcli.world, 224x224 at --fps), written once into
--cache-dir and reused. After one untimed run of each mode on the first clip alone (files in the page cache,
kernels compiled, step costs remembered), the modes alternate, --repeats times each, every run a fresh
`python -m stdcli ask` process. Prints each run's wall-clock and CPU time, the medians and their ratios to
--prefetch (above 1, prefetch is faster), also as the median of each repeat's ratio, the load average met, and
checks that every mode gave the same answers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from stdcli.bench.common import environment
from stdcli.model.loading import pick_device
from stdcli.world import generate_clip, write_video

REPO = Path(__file__).resolve().parent.parent
PREFETCH, SEQUENTIAL, BASELINE = "--prefetch", "--no-prefetch", "baseline"


def write_clip(path: Path, seed: int, minutes: float, fps: float) -> None:
    if not path.exists():
        partial = path.with_suffix(".part.mp4")  # a run cut short leaves no half-written clip behind as done
        write_video(generate_clip(seed, "long", duration=minutes * 60), str(partial), fps=fps, size=(224, 224))
        partial.rename(path)


def clips(folder: Path, count: int, minutes: float, fps: float) -> Path:
    """`count` long clips of `minutes` each at `fps` in folder/ (written if missing, one process per core); the
    folder."""
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(min(count, os.cpu_count() or 1)) as pool:
        list(pool.map(write_clip, [folder / f"clip_{seed:03d}.mp4" for seed in range(count)], range(count),
                      [minutes] * count, [fps] * count))
    return folder


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, list[dict]]:
    """Wall-clock and CPU seconds (user + system, all its threads) of one `stdcli ask`, start to exit, and its
    records."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"bench_folder: {' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu, [json.loads(line) for line in done.stdout.splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, required=True, help="where the clips are kept between runs")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=1.0, help="length of each clip")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the clips")
    parser.add_argument("--frames", type=int, default=64, help="frames sampled per clip (--frames of stdcli ask)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each mode")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--question", default="What happens?")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--baseline", type=Path, help="a folder holding an older stdcli package to time as well")
    args = parser.parse_args()

    folder = clips(args.cache_dir / f"folder_{args.clips}x{args.minutes:g}min_{args.fps:g}fps", args.clips,
                   args.minutes, args.fps)
    first = folder / "first"  # the warm-up's folder: the first clip alone
    first.mkdir(exist_ok=True)
    if not (first / "clip_000.mp4").exists():
        (first / "clip_000.mp4").symlink_to(folder / "clip_000.mp4")
    options = [args.question, "--model", args.model, "--device", args.device, "--frames", str(args.frames),
               "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens), "--jsonl",
               "--quiet"]
    # each mode: the stdcli it runs and the options it adds
    modes = {PREFETCH: (REPO, [PREFETCH]), SEQUENTIAL: (REPO, [SEQUENTIAL])}
    if args.baseline:
        modes[BASELINE] = (args.baseline.resolve(), [])
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    loads: list[float] = []  # the 1-minute load average before each timed run: other work on the machine
    answers: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as costs:
        def command(mode: str, videos: Path) -> tuple[list[str], dict[str, str]]:
            code, flags = modes[mode]  # step costs of the bench's own, shared by every mode
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]),
                   "STDCLI_CACHE_DIR": costs}
            return [sys.executable, "-m", "stdcli", "ask", str(videos), *options, *flags], env

        for mode in modes:
            seconds, _, _ = run(*command(mode, first))
            print(f"warm-up {mode} (one clip): {seconds:.2f} s", flush=True)
        for repeat in range(args.repeats):
            for mode in modes if repeat % 2 == 0 else reversed(modes):
                loads.append(os.getloadavg()[0])
                seconds, used, records = run(*command(mode, folder))
                got = {Path(r["video"]).name: r["answer"] for r in records}
                if answers.setdefault(mode, got) != got:
                    sys.exit(f"bench_folder: the answers of {mode} changed between runs")
                times[mode].append(seconds)
                cpu[mode].append(used)
                print(f"{mode}: {seconds:.2f} s, {used:.2f} s of CPU (load average {loads[-1]:.2f})", flush=True)
    median = {mode: statistics.median(values) for mode, values in times.items()}
    # each repeat runs every mode back to back: their ratio is less swayed by other work coming and going
    ratios = {mode: {"medians": median[mode] / median[PREFETCH],
                     "paired": statistics.median(b / a for a, b in zip(times[PREFETCH], times[mode], strict=True))}
              for mode in modes if mode != PREFETCH}
    same = all(answers[mode] == answers[PREFETCH] for mode in modes)
    for mode in modes:
        print(f"{mode:>14}: median {median[mode]:.2f} s ({', '.join(f'{t:.2f}' for t in times[mode])}); "
              f"CPU median {statistics.median(cpu[mode]):.2f} s")
    for mode, ratio in ratios.items():
        print(f"{mode} / prefetch: {ratio['medians']:.3f}x (medians), {ratio['paired']:.3f}x (median of the "
              "repeats' ratios)")
    print(f"load average {min(loads):.2f} to {max(loads):.2f}; answers identical: {same}")
    if args.json:
        report = {"environment": environment(pick_device(args.device)), "options": options,
                  "baseline": str(args.baseline) if args.baseline else None, "clips": args.clips,
                  "minutes": args.minutes, "fps": args.fps, "frames": args.frames, "times_s": times, "cpu_s": cpu,
                  "load_average": loads, "median_s": median, "ratios": ratios, "answers_identical": same}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not same:
        sys.exit("bench_folder: the modes' answers differ")


if __name__ == "__main__":
    main()
