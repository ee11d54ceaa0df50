"""Tensor parallelism (stdcli/engine/tensor_parallel.py): the language model split over 2 ranks on the CPU (gloo,
float32) decodes token for token what one rank decodes, dense and StD, for every family; the command line's
`--tp`; the 72B shape on the meta device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stdcli.cli import app
from stdcli.engine.tensor_parallel import (
    TensorParallel,
    TensorParallelError,
    check_shape,
    shard_language_model,
    weight_bytes_per_rank,
)
from stdcli.model import build
from stdcli.model.loading import load_model
from stdcli.model.registry import ModelLoadError
from tests.videos import write_video

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("qwen2-vl", "qwen2.5-vl", "llava-ov", "qwen3-vl")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`args` run by `processes` processes of torchrun, importing this checkout's stdcli."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
               "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def one_rank(tp: int) -> TensorParallel:
    """A rank's place without a process group: enough for what is checked before any collective."""
    return TensorParallel(0, tp, torch.device("cpu"), None, None)


def test_split_model_decodes_what_one_rank_decodes_and_profiles(tiny_checkpoint, tmp_path):
    folders = [str(tiny_checkpoint(family)) for family in FAMILIES]
    out = tmp_path / "tp.json"
    run = torchrun("tests/tp_worker.py", "cpu", str(out), *folders)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    drafted = accepted = 0
    for folder in folders:
        families = [results[folder] for results in ranks]
        for rank, family in enumerate(families):
            assert family["kv_heads"] == [2, 1]  # each rank caches one of the two KV heads
            assert family["view_difference"] < 1e-4  # and keeps the same top-K entries of it
            for case, (whole, split) in family["cases"].items():
                assert [s["tokens"] for s in split] == [w["tokens"] for w in whole], (folder, case, rank)
                if case != "auto":  # auto: one rank alone chooses its own gammas
                    assert [(s["drafted"], s["accepted"]) for s in split] == \
                        [(w["drafted"], w["accepted"]) for w in whole], (folder, case)
                drafted += sum(s["drafted"] for s in split)
                accepted += sum(s["accepted"] for s in split)
        # the ranks ran the same cycles (gamma auto included: the leader's choices)
        assert [split for _, split in families[0]["cases"].values()] == \
            [split for _, split in families[1]["cases"].values()]
    assert 0 < accepted < drafted  # drafts were accepted and rejected: agreement is not trivial
    # `stdcli bench --random-init --tp 2`: a random model built split, one rank's steps profiled
    model = ranks[0]["profile"]["model"]
    assert (model["tensor_parallel"], model["kv_heads"], model["q_heads"]) == (2, 1, 2)
    assert model["weight_bytes_per_rank"] < model["weight_bytes"]
    (point,) = ranks[0]["profile"]["points"]
    assert point["skipped"] is None and point["dense_step"]["s"] > 0
    assert [v["gamma"] for v in point["verify_steps"]] == [1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL and CUDA graphs need a CUDA GPU")
def test_split_decoding_steps_are_captured_in_cuda_graphs_with_nccl(tiny_checkpoint, tmp_path):
    """On GPUs the split model's collectives are NCCL's, inside the captured decoding steps: no step falls back to
    plain launches, and the tokens are still one rank's. One GPU gives one rank (its collectives run all the
    same); two or more give two."""
    ranks = min(2, torch.cuda.device_count())
    folders = [str(tiny_checkpoint(family)) for family in ("qwen2-vl", "qwen3-vl")]
    out = tmp_path / "tp.json"
    run = torchrun("tests/tp_worker.py", "cuda", str(out), *folders, processes=ranks)
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in range(ranks):
        results = json.loads(Path(f"{out}.{rank}").read_text())
        assert results["graph_warnings"] == []
        for folder in folders:
            for case, (whole, split) in results[folder]["cases"].items():
                assert [s["tokens"] for s in split] == [w["tokens"] for w in whole], (folder, case, rank)


def test_ask_under_torchrun_answers_once_as_one_rank_does(tiny_checkpoint, tmp_path):
    model = str(tiny_checkpoint("qwen2-vl"))
    clip = str(write_video(tmp_path / "clip.mp4", frames=12))
    args = ["ask", clip, "What happens?", "--model", model, "--device", "cpu", "--max-new-tokens", "8",
            "--gamma", "3", "--k", "4", "--jsonl", "--quiet"]
    alone = CliRunner().invoke(app, args)
    assert alone.exit_code == 0, alone.output
    run = torchrun("-m", "stdcli", *args, "--tp", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(records) == 1  # the leader's; the other rank only computes
    expected = json.loads(alone.stdout)
    assert records[0]["answer"] == expected["answer"]
    assert expected["gammas"] == {"0": 2, "3": 2}  # dense calibration steps, then StD cycles
    assert (records[0]["gammas"], records[0]["acceptance_rate"]) == (expected["gammas"], expected["acceptance_rate"])


def test_tp_needs_torchrun_and_as_many_processes(tmp_path, monkeypatch):
    clip = str(write_video(tmp_path / "clip.mp4", frames=4))
    result = CliRunner().invoke(app, ["ask", clip, "What happens?", "--tp", "2"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "stdcli: error: --tp 2 runs one process per GPU: launch it with torchrun, e.g. torchrun --nproc-per-node 2 "
        "-m stdcli ask --tp 2 ..."]
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "4"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["bench", "--random-init", "--tp", "2"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "stdcli: error: --tp 2 needs 2 processes, torchrun started 4 (--nproc-per-node 2)"]
    for bad, message in ((["--tp", "0"], "--tp must be at least 1"),
                         (["--tp", "2", "--resume", "--output", str(tmp_path / "out.jsonl")], "--resume is not")):
        result = CliRunner().invoke(app, ["ask", clip, "What happens?", *bad])
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(f"stdcli: error: {message}")
    result = CliRunner().invoke(app, ["bench", "--tp", "2"])
    assert result.exit_code == 2 and result.stderr.startswith("stdcli: error: --tp goes with --random-init")


def test_tp_must_divide_the_kv_heads(tiny_checkpoint):
    with pytest.raises(ModelLoadError, match=r"^--tp 3 does not divide the model's 2 KV heads"):
        load_model(str(tiny_checkpoint("qwen2-vl")), device="cpu", tensor_parallel=one_rank(3))
    text = build.make_config("qwen2-vl", "72b").get_text_config()
    for tp in (1, 2, 4, 8):
        check_shape(text, tp)
    with pytest.raises(TensorParallelError, match="16 does not divide the model's 8 KV heads"):
        check_shape(text, 16)


def test_72b_shape_splits_over_2_4_8_ranks():
    config = build.make_config("qwen2-vl", "72b")
    with torch.device("meta"):
        model = build.MODEL_CLASSES["qwen2-vl"]._from_config(config, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 73_405_560_320  # Qwen2-VL-72B's 73.4B
    per_rank = {tp: weight_bytes_per_rank(model, tp) / 1e9 for tp in (1, 2, 4, 8)}  # the figures of docs/parallel.md
    assert per_rank == pytest.approx({1: 146.81, 2: 76.60, 4: 41.49, 8: 23.94}, abs=0.01)
    shard_language_model(model, one_rank(8))
    attn, mlp = model.model.language_model.layers[0].self_attn, model.model.language_model.layers[0].mlp
    assert (attn.q_proj.weight.shape, attn.k_proj.weight.shape, attn.o_proj.weight.shape) == \
        ((1024, 8192), (128, 8192), (8192, 1024))  # 8 query heads and their one KV head, of 128 dimensions
    assert (mlp.gate_proj.weight.shape, mlp.down_proj.weight.shape) == ((3696, 8192), (8192, 3696))
    assert model.lm_head.weight.shape == (152064, 8192)  # replicated
