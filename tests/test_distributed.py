"""`stdcli ask` under torchrun, on the CPU with gloo: several ranks answer one folder into one output file.

The ranks are real processes (`python -m torch.distributed.run`), on a tiny random Qwen2-VL checkpoint, one thread
each: their records must be those of one process, each written once, and a killed rank must cost no finished
record. Each launch imports torch and transformers in every rank, so there are few of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from typer.testing import CliRunner

from stdcli import distributed
from stdcli.cli import app
from stdcli.distributed import FinishLine, World, estimated_work, split
from stdcli.inputs import FrameOptions, videos_in
from stdcli.records import EXTRA_KEYS, RECORD_KEYS
from tests.videos import write_video

REPO = Path(__file__).resolve().parent.parent
QUESTION = "What happens?"
# a fixed gamma and draft: every key but the clock's is then the same in every run
SETTINGS = ["--max-new-tokens", "24", "--gamma", "2", "--draft", "sparse", "--device", "cpu"]
CLOCK = ("timings", "tokens_per_s", "speedup_est")
BROKEN = "broken.mp4"


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> str:
    return str(tiny_checkpoint("qwen2-vl"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Nine videos of three sizes (hard links: distinct files to --resume, written once) and one that is not a
    video."""
    root = tmp_path_factory.mktemp("videos")
    sizes = {"a": {"frames": 10}, "b": {"frames": 40, "width": 96, "height": 64}, "c": {"frames": 20}}
    for name, size in sizes.items():
        write_video(root / f"{name}0.mp4", **size)
        for copy in (1, 2):
            os.link(root / f"{name}0.mp4", root / f"{name}{copy}.mp4")
    (root / BROKEN).write_bytes(b"\x00not a video" * 100)
    return root


@pytest.fixture(scope="module")
def baseline(folder, model, tmp_path_factory) -> dict[str, dict]:
    """The records of one process (in this one, on one thread as the ranks are), by video."""
    out = tmp_path_factory.mktemp("one") / "out.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, ["ask", str(folder), QUESTION, "--model", model, *SETTINGS, "--output",
                                          str(out), "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 1, result.output  # the broken video
    return by_video(out, unique=True)


def by_video(out: Path, unique: bool = False) -> dict[str, dict]:
    """The records of `out` by video, without the keys that depend on the clock; every line must be a whole record
    with the keys of the contract, and (unique) every video have one record only."""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert out.read_text().endswith("\n")
    assert all(list(record) == [*RECORD_KEYS, *EXTRA_KEYS] for record in records)
    found = {r["video"]: {k: v for k, v in r.items() if k not in CLOCK} for r in records}
    assert not unique or len(found) == len(records)
    return found


def answered(out: Path) -> list[str]:
    """The videos with a successful record in `out`, once per record."""
    return [r["video"] for r in map(json.loads, out.read_text().splitlines()) if r["error"] is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(ranks: int, folder: Path, model: str, out: Path, *more: str, stderr) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "STDCLI_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-port",
         str(free_port()), "-m", "stdcli", "ask", str(folder), QUESTION, "--model", model, *SETTINGS, "--output",
         str(out), *more],
        stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
    )


def shares(folder: Path, ranks: int) -> list[list[str]]:
    """The split the ranks make of `folder`."""
    videos = videos_in(str(folder))
    return split(videos, [estimated_work(v, "qwen2-vl", FrameOptions()) for v in videos], ranks)


def ours(stderr: str) -> list[str]:
    """stderr without torchrun's own report of a rank that exited with a failure."""
    return [line for line in stderr.splitlines() if line.startswith("stdcli: ") or ": " in line and " tokens, " in line]


# --- the split --------------------------------------------------------------------------------------------------


def test_the_split_balances_estimated_work_not_counts():
    works = [9, 1, 1, 1, 4, 4, 0, 0, 0]
    parts = split(list("abcdefghi"), works, 3)
    assert sorted(sum(parts, [])) == list("abcdefghi")  # every item once
    assert all(part == sorted(part) for part in parts)  # each share in the input's order
    load = {item: work for item, work in zip("abcdefghi", works, strict=True)}
    assert [sum(load[i] for i in part) for part in parts] == [9, 6, 5]  # vs 14, 6, 0 by count in order
    assert split(list("abcdef"), [0] * 6, 3) == [["a", "d"], ["b", "e"], ["c", "f"]]  # ties: by count
    assert split(list("abcdefghi"), works, 3) == parts  # the same on every rank
    assert split(["a"], [1], 3) == [["a"], [], []]


def test_the_work_of_a_video_is_read_from_its_header(folder):
    a, b = (estimated_work(str(folder / name), "qwen2-vl", FrameOptions()) for name in ("a0.mp4", "b0.mp4"))
    # 1 s and 4 s at Qwen's 2 fps (at least 4 frames, an even count): 4 and 8 frames, of 64x48 and 96x64 pixels
    assert (a, b) == (4 * 64 * 48, 8 * 96 * 64)
    assert estimated_work(str(folder / "b0.mp4"), "qwen2-vl", FrameOptions(frames=2, max_pixels=1536)) == 2 * 1536
    assert estimated_work(str(folder / BROKEN), "qwen2-vl", FrameOptions()) == 0


# --- the finish line --------------------------------------------------------------------------------------------


def test_ranks_wait_for_one_another_at_the_finish_line(monkeypatch):
    monkeypatch.setattr(distributed, "POLL_S", 0.01)
    store = dist.HashStore()
    first, second = FinishLine(store, 2), FinishLine(store, 2)
    ended = []
    waiting = threading.Thread(target=lambda: ended.append(first.cross(3, 1)))
    waiting.start()
    time.sleep(0.2)
    assert not ended  # the first waits for the second
    last = second.cross(2, 0)
    waiting.join(5)
    assert ended == [last] and (last.ranks, last.records, last.failed, last.lost) == (2, 5, 1, 0)


def test_a_rank_that_gives_no_sign_of_life_is_not_waited_for(monkeypatch):
    monkeypatch.setattr(distributed, "POLL_S", 0.01)
    monkeypatch.setattr(distributed, "STALE_S", 0.2)
    line = FinishLine(dist.HashStore(), 2)  # the other rank never beats, never finishes
    finished = line.cross(4, 0)
    assert finished is not None and (finished.ranks, finished.lost, finished.records) == (1, 1, 4)


# --- stdcli bench --------------------------------------------------------------------------------------------------


def test_the_bench_of_several_ranks_reports_the_group(model, folder):
    """What each rank measures of its share, gathered, is reported as one group's throughput (the gather and the
    barriers are torch's: here the shares are measured one after the other, in this process)."""
    from stdcli.bench import batches
    from stdcli.bench.common import BenchItem
    from stdcli.model.loading import load_model

    lm = load_model(model, device="cpu")
    a, b, broken = (BenchItem(str(folder / name), QUESTION) for name in ("a0.mp4", "b0.mp4", BROKEN))
    settings = {"batch_sizes": [1], "gammas": [2], "k": 2, "frames": 4, "max_new_tokens": 4}
    measured: list[batches.Measured] = []
    assert batches.bench_batches(lm, [b, broken], **settings, gather=measured.append) is None  # not rank 0
    report = batches.bench_batches(lm, [a], **settings, gather=lambda mine: [mine, *measured])
    assert report is not None and report["settings"]["ranks"] == 2
    assert [i["video"] for i in report["inputs"]] == [a.video, b.video]
    assert [s["video"] for s in report["skipped"]] == [broken.video]
    for config in report["configs"]:
        assert (config["answers"], config["failed"], config["identical_to_generate"]) == (2, 0, 2)
    # a pass of the group lasts as long as its slowest rank's
    own = batches.Measured({c: [(1.0, {})] for c in measured[0].passes}, [], [])
    slowest = batches.combined([own, measured[0]])
    assert all(p == [(max(1.0, measured[0].passes[c][0][0]), measured[0].passes[c][0][1])]
               for c, p in slowest.passes.items())


# --- the command line -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank, said", [("0", True), ("1", False)])
def test_several_ranks_need_an_output_file(folder, monkeypatch, rank, said):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", rank)
    result = CliRunner().invoke(app, ["ask", str(folder), QUESTION])
    assert result.exit_code == 2 and result.stdout == ""
    # a usage error every rank finds alike is said once, by rank 0
    expected = ["stdcli: error: 2 ranks write their records to one file: give --output FILE.jsonl"] if said else []
    assert result.stderr.splitlines() == expected
    assert World.from_env() == World(int(rank), 2, int(rank))


def test_ranks_started_without_torchrun_are_a_usage_error(folder, model, monkeypatch, tmp_path):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    result = CliRunner().invoke(app, ["ask", str(folder), QUESTION, "--model", model, "--output",
                                      str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("stdcli: error: the 2 ranks cannot meet (start them with torchrun): ")


def test_two_ranks_give_the_records_of_one_process(folder, model, baseline, tmp_path):
    out = tmp_path / "out.jsonl"
    run = torchrun(2, folder, model, out, stderr=subprocess.PIPE)
    stdout, stderr = run.communicate(timeout=240)
    # the broken video fails on its rank, which waits for the other before it exits: every record is written
    assert run.returncode == 1, stderr
    assert by_video(out, unique=True) == baseline
    assert stdout == ""  # the records are in --output
    mine = shares(folder, 2)[0]
    lines = ours(stderr)
    assert lines[0] == f"stdcli: 2 ranks share 10 videos (rank 0: {len(mine)}); each record goes to {out} as it ends"
    assert [line.split(":")[0] for line in lines if " tokens, " in line] == [v for v in mine if BROKEN not in v]
    (error,) = [line for line in lines if "error" in line]
    assert error.startswith(f"stdcli: error: {folder / BROKEN}: not a media file FFmpeg can read")
    assert lines[-1] == f"stdcli: 10 records from 2 ranks in {out}, 1 of them failed (their records say why)"
    assert "stdcli/" not in stderr  # no traceback of ours


def ranks_of(launcher: int) -> dict[int, int]:
    """{rank: process} of the launcher's children."""
    found = {}
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for child in (task / "children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            rank = next(v for v in environ if v.startswith(b"RANK="))
            found[int(rank[5:])] = int(child)
    return found


def test_a_killed_rank_loses_no_record_and_fewer_ranks_resume(folder, model, baseline, tmp_path):
    out = tmp_path / "out.jsonl"
    with (tmp_path / "err").open("w") as err:
        run = torchrun(3, folder, model, out, "--quiet", stderr=err)
        ranks: dict[int, int] = {}
        try:
            deadline = time.monotonic() + 240
            while not (out.exists() and out.read_text().count("\n") >= 2):  # one of them, at least, answered
                assert run.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()
                time.sleep(0.02)
            ranks = ranks_of(run.pid)
            for pid in ranks.values():  # all held where they are, so that the kill comes before the work is done
                os.kill(pid, signal.SIGSTOP)
            os.kill(ranks.pop(1), signal.SIGKILL)  # torchrun then stops the other ranks (SIGTERM)
            for pid in ranks.values():
                os.kill(pid, signal.SIGCONT)
            assert run.wait(timeout=120) != 0
        except BaseException:
            # the ranks (in sessions of their own) before torchrun, which alone would reap them
            for pid in ranks.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run.kill()
            raise
    kept = by_video(out, unique=True)  # every line a whole record, each video once
    assert all(record == baseline[video] for video, record in kept.items())
    assert len(answered(out)) < len(baseline) - 1, "every video was answered before the kill: nothing to resume"
    # two ranks instead of three answer what is missing, and the broken video again
    again = torchrun(2, folder, model, out, "--resume", "--quiet", stderr=subprocess.PIPE)
    _, stderr = again.communicate(timeout=240)
    assert again.returncode == 1, stderr
    assert sorted(answered(out)) == sorted(v for v in baseline if BROKEN not in v)  # each once
    assert by_video(out) == baseline
