"""`stdcli bench` on the CPU: the tiny Qwen2-VL checkpoint on small videos, and the tiny --random-init profile.

Timings on a shared CPU say nothing; what is under test is that the command runs, the JSON keeps its documented keys,
StD's answers equal the dense answers in float32 (it is lossless), floors are positive and the projection is labelled
as one (and no acceptance rate is ever claimed from random weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stdcli import bench
from stdcli.cli import app
from tests.videos import write_video

ENVIRONMENT_KEYS = {"stdcli", "torch", "transformers", "python", "platform", "device", "device_name",
                    "device_memory_bytes", "cuda", "cpu_threads", "started"}
METHOD_KEYS = {"runs", "prefill_s", "decode_s", "total_s", "new_tokens", "decoded_tokens", "decode_tokens_per_s",
               "peak_memory_bytes", "peak_memory_delta_bytes"}
STD_EXTRA_KEYS = {"draft_s", "verify_s", "dense_steps", "cycles", "drafted", "accepted", "gammas", "dense_share"}
CONFIG_KEYS = {"frames", "k", "gamma", "inputs", "runs", "prompt_tokens", "visual_tokens", "kept_tokens", "generate",
               "dense", "std", "decode_speedup_vs_generate", "decode_speedup_vs_dense", "e2e_speedup_vs_generate",
               "e2e_speedup_vs_dense", "acceptance_rate", "mean_accepted_length", "identical_to_dense",
               "identical_to_generate", "dense_identical_to_generate", "total", "per_input"}
INPUT_KEYS = {"frames", "video", "question", "sampled_frames", "prompt_tokens", "visual_tokens", "load_video_s",
              "processor_s", "vision_encoder_s"}
STEP_KEYS = {"s", "floor_s", "bytes", "over_floor"}
POINT_KEYS = {"context", "batch", "skipped", "memory_needed_bytes", "memory_free_bytes", "dense_step", "draft_steps",
              "verify_steps"}
PROFILE_MODEL_KEYS = {"alias", "family", "scale", "dtype", "device", "parameters", "weight_bytes",
                      "weight_bytes_read_per_step", "kv_bytes_per_token", "layers", "kv_heads", "q_heads", "head_dim",
                      "vocab_size"}
BANDWIDTH_KEYS = {"copy_bytes_per_s", "reduction_bytes_per_s", "bytes_per_s", "used", "buffer_bytes", "method"}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("bench_videos")
    return [write_video(folder / "a.mp4", frames=20), write_video(folder / "b.mp4", frames=30, rate=15)]


def invoke(arguments: list[str]):
    return CliRunner().invoke(app, arguments, catch_exceptions=False)


def all_keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


def test_model_bench_runs_and_std_answers_equal_dense_in_float32(tiny_checkpoint, videos, tmp_path):
    out = tmp_path / "bench.json"
    result = invoke([
        "bench", *videos, "--model", str(tiny_checkpoint("qwen2-vl")), "--device", "cpu", "--dtype", "float32",
        "--frames", "4,8", "--k", "2,64", "--gamma", "2,auto", "--max-new-tokens", "6", "--json", str(out), "-q",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["schema"] == bench.SCHEMA and report["kind"] == "model"
    assert set(report) == {"schema", "kind", "environment", "model", "settings", "inputs", "configs", "skipped"}
    assert set(report["environment"]) == ENVIRONMENT_KEYS
    assert report["settings"]["memory_measure"] and report["settings"]["timing"]
    assert report["skipped"] == []
    assert len(report["inputs"]) == 4 and all(set(i) == INPUT_KEYS for i in report["inputs"])
    configs = report["configs"]
    assert [(c["frames"], c["k"], c["gamma"]) for c in configs] == [
        (f, k, g) for f in (4, 8) for k in (2, 64) for g in ("auto", 2)
    ]
    for c in configs:
        assert set(c) == CONFIG_KEYS
        assert set(c["generate"]) == set(c["dense"]) == METHOD_KEYS
        assert set(c["std"]) == METHOD_KEYS | STD_EXTRA_KEYS
        assert c["total"] == c["runs"] == 2
        # lossless: token for token, StD = our dense path = transformers generate
        assert c["identical_to_dense"] == c["identical_to_generate"] == c["dense_identical_to_generate"] == c["total"]
        for method in ("generate", "dense", "std"):
            m = c[method]
            assert m["prefill_s"] > 0 and m["decode_s"] >= 0
            assert m["decoded_tokens"] == pytest.approx(c["runs"] * (m["new_tokens"] - 1))
            assert m["peak_memory_bytes"] is None or m["peak_memory_bytes"] > 0
        gammas = c["std"]["gammas"]
        assert sum(gammas.values()) == c["std"]["cycles"] + c["std"]["dense_steps"]
        assert c["std"]["dense_share"] == pytest.approx(c["std"]["dense_steps"] / c["std"]["decoded_tokens"], abs=1e-3)
        if c["gamma"] == 2:
            assert set(gammas) == {"0", "2"} and gammas["0"] == 2 * c["runs"]  # the calibration steps, then gamma 2
            assert c["std"]["drafted"] > 0 and 0 <= c["acceptance_rate"] <= 1
            assert 1 <= c["mean_accepted_length"] <= c["gamma"] + 1
        assert c["decode_speedup_vs_dense"] > 0 and c["e2e_speedup_vs_generate"] > 0
    stderr = result.stderr
    assert "tok/s StD" in stderr and "identical" in stderr and "2/2" in stderr


def test_builtin_model_missing_is_one_line_exit_2(videos, tmp_path, monkeypatch):
    from stdcli import models

    monkeypatch.setattr(models, "BUILTIN_DIR", tmp_path / "nothing")
    result = invoke(["bench", videos[0], "--device", "cpu"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "built-in model" in lines[0]


def test_random_init_profile_cli(tmp_path, monkeypatch):
    measure = bench.measure_bandwidth  # a small buffer: this test checks plumbing, not the CPU's bandwidth
    monkeypatch.setattr(bench, "measure_bandwidth", lambda device, nbytes=None, iters=10: measure(device, 8 << 20, 3))
    out = tmp_path / "profile.json"
    result = invoke([
        "bench", "--random-init", "--model", "qwen2-vl", "--scale", "tiny", "--device", "cpu", "--context", "128,192",
        "--batch-size", "1,2", "--k", "8,32", "--gamma", "1,2", "--repeat", "2", "--json", str(out), "-q",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["kind"] == "random-init"
    assert set(report) == {"schema", "kind", "environment", "model", "settings", "bandwidth", "points", "projection"}
    assert set(report["model"]) == PROFILE_MODEL_KEYS and set(report["bandwidth"]) == BANDWIDTH_KEYS
    assert report["bandwidth"]["bytes_per_s"] > 0
    assert report["model"]["weight_bytes_read_per_step"] > 0 and report["model"]["kv_bytes_per_token"] > 0
    assert [(p["context"], p["batch"]) for p in report["points"]] == [(128, 1), (128, 2), (192, 1), (192, 2)]
    for point in report["points"]:
        assert set(point) == POINT_KEYS and point["skipped"] is None
        steps = [point["dense_step"], *point["draft_steps"], *point["verify_steps"]]
        assert [d["k"] for d in point["draft_steps"]] == [8, 32]
        assert [v["gamma"] for v in point["verify_steps"]] == [1, 2]
        for step in steps:
            assert STEP_KEYS <= set(step)
            assert step["s"] > 0 and step["floor_s"] > 0 and step["bytes"] > 0 and step["over_floor"] > 0
        # the dense step reads the whole context, a draft step only K + text entries
        assert all(d["bytes"] < point["dense_step"]["bytes"] for d in point["draft_steps"])
    projection = report["projection"]
    assert "PROJECTION" in projection["label"] and "not a measurement" in projection["label"]
    assert {row["basis"] for row in projection["rows"]} == {"measured", "floor"}
    assert len(projection["rows"]) == 4 * 2 * 2 * len(projection["acceptance"])
    assert all(row["best_gamma"] in (1, 2) and row["speedup"] > 0 for row in projection["rows"])
    # random weights never yield a claimed acceptance rate
    assert not {"acceptance_rate", "mean_accepted_length", "identical_to_dense"} & all_keys(report)
    assert "PROJECTION" in result.stderr and "floor" in result.stderr


def test_points_that_do_not_fit_are_skipped_with_a_note(monkeypatch):
    real = bench.free_memory_bytes
    calls = []

    def free(device):  # room for the weights, not for any point's caches
        calls.append(device)
        return real(device) if len(calls) == 1 else 1024

    monkeypatch.setattr(bench, "free_memory_bytes", free)
    report = bench.profile_random_init(
        "qwen2-vl", scale="tiny", device="cpu", contexts=[96], batches=[1], ks=[8], gammas=[1], iters=1, warmup=0,
        bandwidth_bytes=1 << 20,
    )
    (point,) = report["points"]
    assert point["skipped"] and "GiB" in point["skipped"] and point["dense_step"] is None
    assert report["projection"]["rows"] == []


def test_weights_that_do_not_fit_are_refused_before_building(monkeypatch):
    monkeypatch.setattr(bench, "free_memory_bytes", lambda device: 1 << 20)
    with pytest.raises(bench.BenchError, match="do not fit"):
        bench.profile_random_init("qwen2-vl", scale="7b", device="cpu", dtype="bfloat16")


def test_cost_model_projection():
    assert bench.expected_tokens(0.5, 1) == pytest.approx(1.5)
    assert bench.expected_tokens(0.0, 9) == pytest.approx(1.0)
    assert bench.expected_tokens(1.0, 4) == 5
    # drafts as dear as dense steps: drafting never pays, the best gamma is the smallest and the speedup < 1
    best, speedup, _ = bench.project(1.0, 1.0, {1: 1.0, 4: 1.0}, 0.9)
    assert best == 1 and speedup < 1
    # free drafts: E tokens for the price of one verify, longer drafts win at high acceptance
    best, speedup, by_gamma = bench.project(1.0, 0.0, {1: 1.0, 4: 1.0}, 0.9)
    assert best == 4 and speedup == pytest.approx(bench.expected_tokens(0.9, 4))


def test_arguments_and_inputs(videos, tmp_path):
    assert bench.parse_int_list("16, 64,16", "--frames") == [16, 64]
    assert bench.parse_int_list(None, "--k") is None
    for bad in ("", "1,x", "0"):
        with pytest.raises(bench.BenchError):
            bench.parse_int_list(bad, "--k")
    questions = tmp_path / "questions.jsonl"
    Path(tmp_path / "clip.mp4").write_bytes(Path(videos[0]).read_bytes())
    questions.write_text('{"question": "What color?"}\n\n{"question": "How many?", "video": "clip.mp4"}\n')
    items = bench.load_items(videos, questions)
    assert [(Path(i.video).name, i.question) for i in items] == [
        ("a.mp4", "What color?"), ("b.mp4", "What color?"), ("clip.mp4", "How many?")
    ]
    assert [i.question for i in bench.load_items(videos[:1])] == [bench.DEFAULT_QUESTION]
    questions.write_text('{"video": "clip.mp4"}\n')
    with pytest.raises(bench.BenchError, match="question"):
        bench.load_items(videos, questions)


def test_usage_errors_exit_2(videos):
    for arguments in (
        ["bench", "--random-init", videos[0]],
        ["bench", "--random-init", "--model", "nonsense"],
        ["bench", videos[0], "--context", "1024"],
        ["bench", videos[0], "--gamma", "0"],
        ["bench", "--random-init", "--scale", "tiny", "--context", "10"],
    ):
        result = invoke(arguments)
        assert result.exit_code == 2, arguments
        assert len(result.stderr.strip().splitlines()) == 1 and "error" in result.stderr
