"""What every benchmark shares: its inputs (videos x questions), peak memory, timing with device synchronization,
the environment it ran in, and the JSON and number formatting of its reports."""

from __future__ import annotations

import datetime
import gc
import json
import math
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine.device import synchronize
from ..inputs import InputError, collect_videos, read_questions, videos_in
from ..model.prompts import frame_defaults
from .settings import DEFAULT_QUESTION, WARMUP_ITERS, BenchError


@dataclass(frozen=True)
class BenchItem:
    video: str
    question: str


def default_videos() -> list[str]:
    """The videos of samples/ (in the current folder, else beside the package: a checkout)."""
    for folder in (Path("samples"), Path(__file__).resolve().parents[2] / "samples"):
        if folder.is_dir() and (found := videos_in(str(folder))):
            return found
    raise BenchError("no videos given and no samples/ folder with videos here: pass VIDEO files or folders")


def load_items(videos: Sequence[str] | None, questions: str | Path | None = None) -> list[BenchItem]:
    """The (video, question) pairs to benchmark.

    VIDEOS: files and folders as `stdcli ask` takes them (default: samples/). --questions FILE.jsonl: one JSON object
    per line, {"question": ...} asked of every video, or {"question": ..., "video": PATH} for that video only (a
    relative PATH is looked up beside the JSONL file first). Without a file every video gets DEFAULT_QUESTION.
    """
    try:
        paths = collect_videos(list(videos), iter(())) if videos else None
    except InputError as error:
        raise BenchError(str(error)) from None
    if questions is None:
        return [BenchItem(v, DEFAULT_QUESTION) for v in (paths or default_videos())]
    general, paired = _read_questions(Path(questions))
    items = [BenchItem(video, q) for q in general for video in (paths or default_videos())] if general else []
    items += [BenchItem(video, q) for video, q in paired]
    if not items:
        raise BenchError(f"{questions}: no questions")
    return items


def _read_questions(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    try:
        entries = read_questions(path)
    except InputError as error:
        raise BenchError(str(error)) from None
    general = [question for video, question in entries if video is None]
    return general, [(video, question) for video, question in entries if video is not None]


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as file:  # "5": reset the peak resident set size (Linux >= 4.0)
            file.write("5")
    except OSError:
        return False
    return True


class MemoryMeter:
    """Peak memory of one run: CUDA allocator peak on a GPU, peak resident set size on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated, reset before each run; delta = peak - allocated at start"
        elif _reset_peak_rss() and _status_kib("VmHWM") is not None:
            self.method = (
                "peak RSS of the process: VmHWM of /proc/self/status, reset through /proc/self/clear_refs before each "
                "run; delta = peak - RSS at start"
            )
            self._hwm = True
        else:
            self.method = (
                "peak RSS: ru_maxrss (process lifetime high-water mark, not reset per run); delta = peak - RSS at start"
            )
            self._hwm = False
        self._start = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return
        if self._hwm:
            _reset_peak_rss()
        self._start = _status_kib("VmRSS") or 0

    def stop(self) -> tuple[int | None, int | None]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._hwm:
            peak = _status_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return peak, (max(peak - self._start, 0) if peak is not None else None)


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    from .. import __version__

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        memory = torch.cuda.get_device_properties(device).total_memory
    else:
        name, memory = _cpu_name(), None
    return {
        "stdcli": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "device_memory_bytes": memory,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(report: dict, path: str | Path) -> None:
    """The report as JSON to `path` ("-": stdout)."""
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    Path(path).write_text(text, encoding="utf-8")


def round_or_none(value: float | None, digits: int = 4) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(value, digits)


def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):,.0f}"




def mean_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round_or_none(numerator / denominator) if numerator and denominator else None


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def median_time(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int = WARMUP_ITERS) -> float:
    times = []
    for i in range(warmup + iters):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def model_info(lm: Any) -> dict[str, Any]:
    return {
        "name": lm.name,
        "family": lm.family,
        "location": lm.location,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "device": str(lm.device),
    }


def check_frames(lm, frames: Iterable[int | None]) -> None:
    multiple = frame_defaults(lm.family).multiple_of
    odd = [f for f in frames if f is not None and f % multiple]
    if odd:
        raise BenchError(f"--frames values must be multiples of {multiple} for {lm.family} models, got {odd[0]}")
