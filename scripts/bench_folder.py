"""A whole `stdcli ask FOLDER` run with --prefetch against --no-prefetch, side by side in one run: the time from
starting the command to its exit, model loading included, as a user waits for it.

    python scripts/bench_folder.py --cache-dir /tmp/stdcli-bench --clips 4 --minutes 1 --frames 64 --repeats 3

The clips are generated videos of the built-in model's world (stdcli.world, 224x224 at 8 fps), written once into
--cache-dir and reused. After one untimed run of each mode (files in the page cache, step costs remembered), the
modes alternate, --repeats times each, every run a fresh `python -m stdcli ask` process of this checkout. Prints
each run's wall-clock and CPU time, the medians and their ratio (no prefetch / prefetch: above 1, prefetch is
faster), also as the median of each repeat's ratio, the load average met, and checks that both modes gave the
same answers.
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
from pathlib import Path

from stdcli.bench.common import environment
from stdcli.model.loading import pick_device
from stdcli.world import generate_clip, write_video

REPO = Path(__file__).resolve().parent.parent
MODES = ("--prefetch", "--no-prefetch")


def clips(folder: Path, count: int, minutes: float) -> Path:
    """`count` long clips of `minutes` each in folder/ (written if missing); the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        path = folder / f"clip_{seed:03d}.mp4"
        if not path.exists():
            partial = path.with_suffix(".part.mp4")  # a run cut short leaves no half-written clip behind as done
            write_video(generate_clip(seed, "long", duration=minutes * 60), str(partial), fps=8.0, size=(224, 224))
            partial.rename(path)
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
    parser.add_argument("--frames", type=int, default=64, help="frames sampled per clip (--frames of stdcli ask)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each mode")
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--question", default="What happens?")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    folder = clips(args.cache_dir / f"folder_{args.clips}x{args.minutes:g}min", args.clips, args.minutes)
    command = [sys.executable, "-m", "stdcli", "ask", str(folder), args.question, "--model", args.model,
               "--device", args.device, "--frames", str(args.frames), "--batch-size", str(args.batch_size),
               "--max-new-tokens", str(args.max_new_tokens), "--jsonl", "--quiet"]
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    loads: list[float] = []  # the 1-minute load average before each timed run: other work on the machine
    answers: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as costs:
        # this checkout's stdcli, and step costs of the bench's own, shared by both modes
        env = {**os.environ, "PYTHONPATH": str(REPO), "STDCLI_CACHE_DIR": costs}
        for mode in MODES:
            seconds, _, records = run([*command, mode], env)
            answers[mode] = {r["video"]: r["answer"] for r in records}
            print(f"warm-up {mode}: {seconds:.2f} s", flush=True)
        for repeat in range(args.repeats):
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
                loads.append(os.getloadavg()[0])
                seconds, used, records = run([*command, mode], env)
                if {r["video"]: r["answer"] for r in records} != answers[mode]:
                    sys.exit(f"bench_folder: the answers of {mode} changed between runs")
                times[mode].append(seconds)
                cpu[mode].append(used)
                print(f"{mode}: {seconds:.2f} s, {used:.2f} s of CPU (load average {loads[-1]:.2f})", flush=True)
    median = {mode: statistics.median(values) for mode, values in times.items()}
    ratio = median["--no-prefetch"] / median["--prefetch"]
    # each repeat runs both modes back to back: their ratio is less swayed by other work coming and going
    paired = statistics.median(b / a for a, b in zip(times["--prefetch"], times["--no-prefetch"], strict=True))
    same = answers["--prefetch"] == answers["--no-prefetch"]
    for mode in MODES:
        print(f"{mode:>14}: median {median[mode]:.2f} s ({', '.join(f'{t:.2f}' for t in times[mode])}); "
              f"CPU median {statistics.median(cpu[mode]):.2f} s")
    print(f"no prefetch / prefetch: {ratio:.3f}x (medians), {paired:.3f}x (median of the repeats' ratios); "
          f"load average {min(loads):.2f} to {max(loads):.2f}; answers identical: {same}")
    if args.json:
        report = {"environment": environment(pick_device(args.device)), "command": command, "clips": args.clips,
                  "minutes": args.minutes, "frames": args.frames, "times_s": times, "cpu_s": cpu,
                  "load_average": loads, "median_s": median, "ratio": ratio, "paired_ratio": paired,
                  "answers_identical": same}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not same:
        sys.exit("bench_folder: the answers with --prefetch differ from those without")


if __name__ == "__main__":
    main()
