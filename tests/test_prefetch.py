"""Loading the next videos while the current ones decode (stdcli.prefetch): in order, within a memory budget, a
broken video still one record in its place, the same answers, and nothing left running after Ctrl-C."""

from __future__ import annotations

import json
import threading
import time

import pytest
from typer.testing import CliRunner

import stdcli.ask
from stdcli.ask import answer_videos
from stdcli.cli import app
from stdcli.engine import DecodeOptions
from stdcli.errors import STOPS
from stdcli.inputs import AskOptions, InputError, parse_size
from stdcli.model.loading import load_model
from stdcli.prefetch import Prefetch, default_budget
from stdcli.video import sample_frames, target_indices
from tests.videos import read_frame_number, write_text, write_video

FRAMES = (6, 12, 4, 9, 14, 5, 8)  # prompts of different lengths
OPTIONS = AskOptions("What happens?", decode=DecodeOptions(max_new_tokens=6, gamma=2))


def frame_bytes(count: int, height: int = 48, width: int = 64) -> int:
    return count * height * width * 3


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("prefetch")
    return [write_video(folder / f"v{i}.mp4", frames=n, rate=4) for i, n in enumerate(FRAMES)]


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return load_model(str(tiny_checkpoint("qwen2-vl")), device="cpu", dtype="float32")


def no_prefetch_thread_left() -> bool:
    return not [t for t in threading.enumerate() if t.name == "stdcli-prefetch"]


class Sampler:
    """A prefetch's load: every frame of a video, sampled with sample_frames, reserving its bytes first; it notes
    what the prefetch holds right after each reservation. Loads wait for `go`, so that the test can read the
    prefetch it builds."""

    def __init__(self) -> None:
        self.prefetch: Prefetch | None = None
        self.go = threading.Event()
        self.seen: list[tuple[int, int]] = []  # (bytes held by the prefetch, bytes of this video)

    def __call__(self, path: str, reserve):
        self.go.wait()

        def admit(count: int, height: int, width: int) -> None:
            reserve(frame_bytes(count, height, width))
            assert self.prefetch is not None
            self.seen.append((self.prefetch.held, frame_bytes(count, height, width)))

        return sample_frames(path, num_frames=None, fps=4.0, max_frames=10_000, admit=admit)

    def start(self, prefetch: Prefetch) -> Prefetch:
        self.prefetch = prefetch
        self.go.set()
        return prefetch


def test_results_come_in_order_and_the_reserved_bytes_stay_within_the_budget(videos, tmp_path):
    oversized = write_video(tmp_path / "oversized.mp4", frames=40, rate=4)
    order = [*videos[:3], oversized, *videos[3:]]
    budget = frame_bytes(20)  # a few of the small videos at once; the oversized one (40 frames) alone
    sampler = Sampler()
    with sampler.start(Prefetch(order, sampler, budget)) as loaded:
        results = []
        for result in loaded:
            time.sleep(0.05)  # a slow consumer: the worker runs ahead until the budget stops it
            results.append(result)
    assert [r.path for r in results] == order
    assert [len(r.frames) for r in results] == [*FRAMES[:3], 40, *FRAMES[3:]]
    assert all(held <= budget or held == size for held, size in sampler.seen), sampler.seen
    assert (frame_bytes(40), frame_bytes(40)) in sampler.seen  # the oversized one was loaded, alone
    assert max(held for held, size in sampler.seen if size < budget) > budget // 2  # it did read ahead
    assert no_prefetch_thread_left()


def test_a_very_long_video_loads_alone_with_every_frame_right(videos, tmp_path):
    long = write_video(tmp_path / "long.mp4", frames=3600, rate=6)  # ten minutes (frame numbers read up to 4095)
    sampler = Sampler()
    with sampler.start(Prefetch([videos[0], long, videos[1]], sampler, budget=frame_bytes(50))) as loaded:
        first, sampled, last = list(loaded)
    assert len(sampled.frames) == 2400  # 4 fps over 600 s
    assert [read_frame_number(f) for f in sampled.frames] == target_indices(3600, 2400)
    assert (frame_bytes(2400), frame_bytes(2400)) in sampler.seen
    assert (first.path, last.path) == (videos[0], videos[1])


def test_an_error_of_the_sources_is_raised_in_its_place():
    def sources():
        yield from (1, 2)
        raise OSError("the list of videos cannot be read")

    def load(n: int, reserve) -> int:
        reserve(n)
        return n * 10

    taken = []
    with Prefetch(sources(), load, budget=1) as loaded:
        with pytest.raises(OSError, match="cannot be read"):
            for result in loaded:
                taken.append(result)
    assert taken == [10, 20] and loaded.held == 0 and no_prefetch_thread_left()
    with pytest.raises(ValueError, match="at least 1 byte"):
        Prefetch([], lambda n, reserve: n, budget=0)


def test_a_broken_video_among_good_ones_is_one_failed_record_in_its_place(lm, videos, tmp_path):
    broken = write_text(tmp_path / "broken.mp4")
    order = [videos[0], broken, videos[1], str(tmp_path / "missing.mp4"), videos[2]]
    records = []
    answer_videos(lm, order, OPTIONS, 1, records.append, prefetch=frame_bytes(10))
    assert [r.video for r in records] == order
    assert [r.error["type"] if r.error else None for r in records] == [None, "VideoError", None, "VideoError", None]
    assert no_prefetch_thread_left()


@pytest.mark.parametrize("prefetch", [None, frame_bytes(10)])
def test_an_error_after_a_stop_is_the_stop(lm, videos, tmp_path, monkeypatch, prefetch):
    """A Ctrl-C that went through a library's import can leave a module half made, whose next use fails while a
    video loads: after a stop, that error ends the run as the stop does, not as one broken video."""
    monkeypatch.setattr(STOPS, "first", KeyboardInterrupt())
    records = []
    with pytest.raises(KeyboardInterrupt):
        answer_videos(lm, [videos[0], write_text(tmp_path / "broken.mp4")], OPTIONS, 1, records.append,
                      prefetch=prefetch)
    assert [r.video for r in records] == [videos[0]] and no_prefetch_thread_left()


@pytest.mark.parametrize("batch", [1, 3])
def test_answers_with_prefetch_equal_answers_without(lm, videos, batch):
    some = videos[:4]
    without, ahead, alone = [], [], []
    answer_videos(lm, some, OPTIONS, batch, without.append)
    answer_videos(lm, some, OPTIONS, batch, ahead.append, prefetch=1 << 30)
    answer_videos(lm, some, OPTIONS, batch, alone.append, prefetch=1)  # every video alone, one ahead at most
    key = lambda r: (r.video, r.answer, r.new_tokens, r.frames, r.prompt_tokens)  # noqa: E731
    assert [key(r) for r in ahead] == [key(r) for r in alone] == [key(r) for r in without]
    if batch == 1:
        assert [r.video for r in ahead] == some


@pytest.mark.parametrize("budget", [1, 1 << 30])  # the worker waiting for room, or loading ahead freely
def test_ctrl_c_from_the_consumer_keeps_finished_records_and_leaves_no_worker(lm, videos, budget):
    records = []

    def on_record(record) -> None:
        if len(records) == 2:
            raise KeyboardInterrupt
        records.append(record)

    with pytest.raises(KeyboardInterrupt):
        answer_videos(lm, videos, OPTIONS, 1, on_record, prefetch=budget)
    assert [r.video for r in records] == videos[:2] and all(r.error is None for r in records)
    assert no_prefetch_thread_left()


def test_cli_prefetch_options(tiny_checkpoint, tmp_path, monkeypatch):
    budgets: list[int] = []  # of every prefetch started

    class Counted(Prefetch):
        def __init__(self, items, load, budget):
            budgets.append(budget)
            super().__init__(items, load, budget)

    monkeypatch.setattr(stdcli.ask, "Prefetch", Counted)
    model = str(tiny_checkpoint("qwen2-vl"))
    for i, frames in enumerate((6, 12, 4)):
        write_video(tmp_path / f"v{i}.mp4", frames=frames, rate=4)
    run = lambda *extra: CliRunner().invoke(  # noqa: E731
        app, ["ask", str(tmp_path), "What happens?", "--model", model, "--max-new-tokens", "5", "--jsonl", *extra])
    answers = [[(r["video"], r["answer"]) for r in map(json.loads, run(*extra).stdout.splitlines())]
               for extra in (["--no-prefetch"], ["--prefetch-memory", "1"])]
    assert answers[0] == answers[1] and len(answers[0]) == 3
    assert budgets == [1]
    # on the CPU the model's threads take every core: no loading ahead unless asked for
    assert run().exit_code == 0 and budgets == [1]
    assert run("--prefetch").exit_code == 0 and len(budgets) == 2
    for bad, message in ((["--prefetch-memory", "lots"], "--prefetch-memory: 'lots' is not a size"),
                         (["--prefetch-memory", "0"], "less than one byte"),
                         (["--prefetch-memory", "1G", "--no-prefetch"], "are exclusive")):
        result = run(*bad)
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_sizes_and_the_default_budget():
    assert [parse_size(t) for t in ("4G", "512M", "1.5GiB", "300000", "2gb", "10k", "1B")] == [
        4 << 30, 512 << 20, 3 << 29, 300000, 2 << 30, 10 << 10, 1]
    for bad in ("", "G", "4X", "1iB", "-1G", "0"):
        with pytest.raises(InputError):
            parse_size(bad)
    assert default_budget(8 << 30) == 2 << 30 and default_budget(64 << 30) == 4 << 30 and default_budget(0) == 1
