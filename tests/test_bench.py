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

from stdcli.bench import batches, common, profile, settings
from stdcli.cli import app
from stdcli.engine.stats import DecodeStats
from stdcli.records import Record
from tests.videos import write_video

ENVIRONMENT_KEYS = {"stdcli", "torch", "transformers", "python", "platform", "device", "device_name",
                    "device_memory_bytes", "cuda", "cpu_threads", "started"}
METHOD_KEYS = {"runs", "prefill_s", "decode_s", "total_s", "new_tokens", "decoded_tokens", "decode_tokens_per_s",
               "peak_memory_bytes", "peak_memory_delta_bytes"}
STD_EXTRA_KEYS = {"draft_s", "verify_s", "dense_steps", "cycles", "drafted", "accepted", "gammas", "drafts",
                  "dense_share"}
CONFIG_KEYS = {"frames", "k", "gamma", "draft", "inputs", "runs", "prompt_tokens", "visual_tokens", "kept_tokens",
               "generate", "dense", "std", "decode_speedup_vs_generate", "decode_speedup_vs_dense",
               "e2e_speedup_vs_generate", "e2e_speedup_vs_dense", "acceptance_rate", "mean_accepted_length",
               "identical_to_dense", "identical_to_generate", "dense_identical_to_generate", "total", "per_input",
               "decode_speedup_vs_dense_range"}
INPUT_KEYS = {"frames", "video", "question", "sampled_frames", "prompt_tokens", "visual_tokens", "load_video_s",
              "processor_s", "vision_encoder_s"}
STEP_KEYS = {"s", "floor_s", "bytes", "over_floor"}
POINT_KEYS = {"context", "batch", "skipped", "memory_needed_bytes", "memory_free_bytes", "dense_step", "draft_steps",
              "verify_steps"}
PROFILE_MODEL_KEYS = {"alias", "family", "scale", "dtype", "device", "parameters", "weight_bytes",
                      "weight_bytes_read_per_step", "kv_bytes_per_token", "layers", "linear_layers",
                      "linear_state_bytes", "kv_heads", "q_heads", "head_dim", "vocab_size", "tensor_parallel",
                      "weight_bytes_per_rank"}
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
    assert report["schema"] == settings.SCHEMA and report["kind"] == "model"
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
    # the run ends with one sentence: did StD help, by how much, on what
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(("stdcli: StD helped", "stdcli: StD did not help")) and "dense path" in last, last


def test_builtin_model_missing_is_one_line_exit_2(videos, tmp_path, monkeypatch):
    from stdcli.model import registry

    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path / "nothing")
    result = invoke(["bench", videos[0], "--device", "cpu"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "built-in model" in lines[0]


def test_random_init_profile_cli(tmp_path, monkeypatch):
    measure = profile.measure_bandwidth  # a small buffer: this test checks plumbing, not the CPU's bandwidth
    monkeypatch.setattr(profile, "measure_bandwidth", lambda device, nbytes=None, iters=10: measure(device, 8 << 20, 3))
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
    assert result.stderr.strip().splitlines()[-1].startswith("stdcli: Projected, not measured: at acceptance 0.8")


KINDS = {"qwen2-vl": ["sparse", "int4"], "qwen3-vl": ["sparse"]}  # quantized drafts need our fused forward


def test_random_init_hybrid_profiles_and_decodes_like_dense(one_thread):
    """The tiny Qwen3.5 through the profile and its measured decoding (prefilled once, each run seeded from it):
    every gamma gives the dense tokens, so each run started from the prompt's linear-attention state."""
    report = profile.profile_random_init(
        "qwen3.5", scale="tiny", device="cpu", contexts=[96], batches=[2], ks=[8], gammas=[2], iters=1, warmup=0,
        decode_tokens=8, decode_rounds=1, bandwidth_bytes=1 << 20,
    )
    assert (report["model"]["layers"], report["model"]["linear_layers"]) == (2, 2)
    (point,) = report["points"]
    assert point["dense_step"]["bytes"] > point["draft_steps"][0]["bytes"] > 0
    assert all(c["identical_to_dense"] == c["total"] == 2 for c in point["decode"]["configs"])


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen3-vl"])  # our fused forward, transformers' forward
def test_random_init_decoding_compares_auto_with_fixed_gammas_and_dense(family):
    report = profile.profile_random_init(
        family, scale="tiny", device="cpu", contexts=[160], batches=[1, 2], ks=[16], gammas=[1, 3, 12],
        drafts=KINDS[family], iters=1, warmup=0, decode_tokens=12, decode_rounds=1,
    )
    assert "MEASURED" in report["decode_label"] and "not a prediction" in report["decode_label"]
    kinds = KINDS[family]
    for point in report["points"]:
        assert [(d["draft"], d["k"]) for d in point["draft_steps"]] == [(kind, 16) for kind in kinds]
        if "int4" in kinds:
            sparse, int4 = point["draft_steps"]
            assert int4["bytes"] < sparse["bytes"]  # an int4 draft step reads about a quarter of the weights
        decode = point["decode"]
        methods = [(c["gamma"], c["draft"]) for c in decode["configs"]]
        assert methods == [(0, None), *((g, kind) for kind in kinds for g in (1, 3, 12)), ("auto", "auto")]
        for config in decode["configs"]:
            # float32: every gamma and draft kind (and auto's choices) gives the dense tokens, for every sequence
            assert config["identical_to_dense"] == config["total"] == point["batch"]
            assert config["decoded_tokens"] == 11 * point["batch"] and config["tokens_per_s"] > 0
        fixed = {(c["gamma"], c["draft"]): c for c in decode["configs"]}
        for kind in kinds:
            assert fixed[3, kind]["gammas"].get("3", 0) > 0 and fixed[3, kind]["drafts"] == {
                kind: sum(fixed[3, kind]["gammas"].get(str(g), 0) for g in range(1, 16))}
        assert fixed[3, "sparse"]["random_model_acceptance"] is not None
        best = (decode["best_fixed_gamma"], decode["best_fixed_draft"])
        assert best in fixed and best[0] in (1, 3, 12)
        rate = {m: c["tokens_per_s"] for m, c in fixed.items()}
        assert decode["auto_vs_dense"] == pytest.approx(rate["auto", "auto"] / rate[0, None], abs=1e-3)
        assert decode["auto_vs_best_fixed"] == pytest.approx(rate["auto", "auto"] / rate[best], abs=1e-3)


def test_random_init_scale_follows_the_alias():
    assert profile.resolve_family("qwen2-vl", None) == ("qwen2-vl", "7b")
    assert profile.resolve_family("qwen2-vl-2b", None) == ("qwen2-vl", "2b")
    assert profile.resolve_family("llava-ov", None) == ("llava-ov", "7b")
    assert profile.resolve_family("qwen3-vl", None) == ("qwen3-vl", "8b")
    assert profile.resolve_family("qwen3-vl-2b", None) == ("qwen3-vl", "2b")
    assert profile.resolve_family("qwen3-vl", "tiny") == ("qwen3-vl", "tiny")
    with pytest.raises(settings.BenchError, match="no '32b' scale for qwen3-vl; available: tiny, 2b, 8b"):
        profile.resolve_family("qwen3-vl-32b", None)
    assert profile.resolve_family("qwen3.5", None) == ("qwen3.5", "9b")
    assert profile.resolve_family("qwen3.5-27b", None) == ("qwen3.5", "27b")
    with pytest.raises(settings.BenchError, match="no '2b' scale for qwen3.5; available: tiny, 9b, 27b"):
        profile.resolve_family("qwen3.5-2b", None)


def test_hybrid_real_shape_counts_kv_only_where_there_is_attention():
    """`bench --random-init --model qwen3.5` builds Qwen3.5-9B's shape (here on the meta device: no memory). The
    step floors count KV in the 8 full-attention layers only, and the recurrent state of the 24 linear ones, which
    every step reads and writes whatever it attends to: a sparse draft saves only on the KV. So at batch 1 and 16K
    tokens a draft step reads 97% of a dense step's bytes, at batch 8 and 64K half (Qwen3-VL-8B's: 87% and 17%)."""
    import torch

    from stdcli.engine.session import Engine
    from stdcli.model import build

    family, scale = profile.resolve_family("qwen3.5", None)
    config = build.make_config(family, scale)
    with torch.device("meta"):
        model = build.MODEL_CLASSES[family]._from_config(config, dtype=torch.bfloat16)
    _, _, weights = profile._weight_bytes(model)
    shape = profile.shape_of(Engine.of(model), config.get_text_config(), torch.bfloat16)
    assert (shape.layers, shape.linear_layers) == (8, 24) and shape.kv_bytes_per_token == 8 * 2 * 4 * 256 * 2
    assert shape.linear_state_bytes == 24 * (8192 * 4 * 2 + 32 * 128 * 128 * 4)
    kept = 512 + 64 + 1  # K + text + the new token

    def draft_share(batch: int, context: int) -> float:
        return shape.step_bytes(weights, batch, kept) / shape.step_bytes(weights, batch, context + 1)

    assert draft_share(1, 16384) == pytest.approx(0.969, abs=0.001)
    assert draft_share(8, 65536) == pytest.approx(0.497, abs=0.001)
    # the projection takes whatever the steps cost: at those shares drafting pays only with a large batch x context
    def point(batch: int, context: int) -> dict:  # dense steps and verifies of one unit, drafts of their share
        share = {"s": draft_share(batch, context), "floor_s": draft_share(batch, context)}
        return {"skipped": None, "context": context, "batch": batch, "dense_step": {"s": 1.0, "floor_s": 1.0},
                "draft_steps": [{"k": 512, "draft": "sparse", **share}],
                "verify_steps": [{"gamma": g, "s": 1.0, "floor_s": 1.0} for g in (1, 2, 4)]}

    rows = profile.projection([point(8, 65536), point(1, 16384)], acceptance=[0.8])["rows"]
    speedups = {(r["batch"], r["basis"]): r["speedup"] for r in rows}
    assert speedups[8, "measured"] > 1.1 and speedups[1, "measured"] < 1.0


def test_points_that_do_not_fit_are_skipped_with_a_note(monkeypatch):
    real = profile.free_memory_bytes
    calls = []

    def free(device):  # room for the weights, not for any point's caches
        calls.append(device)
        return real(device) if len(calls) == 1 else 1024

    monkeypatch.setattr(profile, "free_memory_bytes", free)
    report = profile.profile_random_init(
        "qwen2-vl", scale="tiny", device="cpu", contexts=[96], batches=[1], ks=[8], gammas=[1], iters=1, warmup=0,
        bandwidth_bytes=1 << 20,
    )
    (point,) = report["points"]
    assert point["skipped"] and "GiB" in point["skipped"] and point["dense_step"] is None
    assert report["projection"]["rows"] == []


def test_weights_that_do_not_fit_are_refused_before_building(monkeypatch):
    monkeypatch.setattr(profile, "free_memory_bytes", lambda device: 1 << 20)
    with pytest.raises(settings.BenchError, match="do not fit"):
        profile.profile_random_init("qwen2-vl", scale="7b", device="cpu", dtype="bfloat16")


def test_cost_model_projection():
    assert profile.expected_tokens(0.5, 1) == pytest.approx(1.5)
    assert profile.expected_tokens(0.0, 9) == pytest.approx(1.0)
    assert profile.expected_tokens(1.0, 4) == 5
    # drafts as dear as dense steps: drafting never pays, the best gamma is the smallest and the speedup < 1
    best, speedup, _ = profile.project(1.0, 1.0, {1: 1.0, 4: 1.0}, 0.9)
    assert best == 1 and speedup < 1
    # free drafts: E tokens for the price of one verify, longer drafts win at high acceptance
    best, speedup, by_gamma = profile.project(1.0, 0.0, {1: 1.0, 4: 1.0}, 0.9)
    assert best == 4 and speedup == pytest.approx(profile.expected_tokens(0.9, 4))


def test_arguments_and_inputs(videos, tmp_path):
    assert settings.parse_int_list("16, 64,16", "--frames") == [16, 64]
    assert settings.parse_int_list(None, "--k") is None
    for bad in ("", "1,x", "0"):
        with pytest.raises(settings.BenchError):
            settings.parse_int_list(bad, "--k")
    questions = tmp_path / "questions.jsonl"
    Path(tmp_path / "clip.mp4").write_bytes(Path(videos[0]).read_bytes())
    questions.write_text('{"question": "What color?"}\n\n{"question": "How many?", "video": "clip.mp4"}\n')
    items = common.load_items(videos, questions)
    assert [(Path(i.video).name, i.question) for i in items] == [
        ("a.mp4", "What color?"), ("b.mp4", "What color?"), ("clip.mp4", "How many?")
    ]
    assert [i.question for i in common.load_items(videos[:1])] == [settings.DEFAULT_QUESTION]
    questions.write_text('{"video": "clip.mp4"}\n')
    with pytest.raises(settings.BenchError, match="question"):
        common.load_items(videos, questions)


def test_usage_errors_exit_2(videos):
    for arguments in (
        ["bench", "--random-init", videos[0]],
        ["bench", "--random-init", "--model", "nonsense"],
        ["bench", videos[0], "--context", "1024"],
        ["bench", videos[0], "--gamma", "0"],
        ["bench", videos[0], "--gamma", "auto,16"],
        ["bench", "--random-init", "--scale", "tiny", "--gamma", "16"],
        ["bench", "--random-init", "--scale", "tiny", "--context", "10"],
    ):
        result = invoke(arguments)
        assert result.exit_code == 2, arguments
        assert len(result.stderr.strip().splitlines()) == 1 and "error" in result.stderr


def test_random_init_refuses_every_draft_kind_the_model_cannot_run(videos):
    """A quantized kind after one the model can run: Qwen3.5 decodes through transformers' forward, so it drafts
    sparse only; refused once the model is built, with one error line after the progress."""
    result = invoke(["bench", "--random-init", "--model", "qwen3.5", "--scale", "tiny", "--context", "128",
                     "--draft", "sparse,int8"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("stdcli: error: int8 drafts need the fused decoding")


BATCH_CONFIG_KEYS = {"method", "gamma", "batch_size", "runs", "answers", "failed", "seconds", "answers_per_min",
                     "decoded_tokens", "decoded_tokens_per_s", "drafted", "accepted", "acceptance_rate", "gammas",
                     "identical_to_generate", "total", "mismatches", "speedup_vs_generate", "speedup_vs_dense",
                     "round_seconds", "speedup_vs_dense_range"}
BATCH_SETTINGS_KEYS = {"batch_sizes", "gamma", "k", "draft", "frames", "max_new_tokens", "rounds", "questions", "ranks",
                       "timing", "identical"}


@pytest.fixture(scope="module")
def tiny_lm(tiny_checkpoint):
    from stdcli.model.loading import load_model

    return load_model(str(tiny_checkpoint("qwen2-vl")), device="cpu", dtype="float32")


def test_batch_bench_answers_equal_generate_at_every_batch_size(tiny_lm, videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    items = common.load_items([*videos, str(broken)])
    # batch 4 is more than the 2 readable videos; K = 2 keeps drafting sparse
    report = batches.bench_batches(tiny_lm, items, batch_sizes=[1, 4], gammas=["auto", 2], k=2, frames=4,
                                 max_new_tokens=5, rounds=1)
    assert set(report) == {"schema", "kind", "environment", "model", "settings", "inputs", "configs", "skipped"}
    assert report["schema"] == settings.SCHEMA and report["kind"] == "batch"
    assert set(report["environment"]) == ENVIRONMENT_KEYS and set(report["settings"]) == BATCH_SETTINGS_KEYS
    assert report["settings"]["rounds"] == 1 and report["settings"]["frames"] == 4
    # the unreadable video is skipped, with its reason, and left out of the timed passes
    assert [(Path(s["video"]).name, bool(s["error"])) for s in report["skipped"]] == [("broken.mp4", True)]
    assert [i["video"] for i in report["inputs"]] == videos
    assert all(i["generate_answer"] and i["generate_new_tokens"] >= 1 for i in report["inputs"])
    configs = report["configs"]
    assert [(c["method"], c["batch_size"], c["gamma"]) for c in configs] == [
        ("generate", 1, None), ("dense", 1, 0), ("std", 1, "auto"), ("std", 1, 2),
        ("dense", 4, 0), ("std", 4, "auto"), ("std", 4, 2),
    ]
    decoded = sum(i["generate_new_tokens"] - 1 for i in report["inputs"])
    for c in configs:
        assert set(c) == BATCH_CONFIG_KEYS
        assert c["runs"] == c["total"] == c["answers"] == 2 and c["failed"] == 0
        # float32: every batched answer, dense or StD, is generate's answer
        assert c["identical_to_generate"] == 2 and c["mismatches"] == []
        assert c["decoded_tokens"] == decoded
        rounding = 1e-3 + 1e-4 / c["seconds"]  # seconds are rounded to 4 decimals in the report
        assert c["seconds"] > 0 and c["answers_per_min"] == pytest.approx(60 * 2 / c["seconds"], rel=rounding)
        assert c["decoded_tokens_per_s"] == pytest.approx(decoded / c["seconds"], rel=rounding)
        assert (c["speedup_vs_generate"] is None) == (c["method"] == "generate")
        assert (c["speedup_vs_dense"] is None) == (c["method"] != "std")
        if c["method"] != "std":
            assert c["drafted"] is c["accepted"] is c["acceptance_rate"] is c["gammas"] is None
    for c in configs:
        if c["gamma"] == 2:
            assert c["drafted"] > 0 and 0 <= c["accepted"] <= c["drafted"]
            assert c["acceptance_rate"] == pytest.approx(c["accepted"] / c["drafted"], abs=1e-4)
            assert c["drafted"] == 2 * c["gammas"]["2"]
        if c["method"] == "std":
            dense = next(d for d in configs if d["method"] == "dense" and d["batch_size"] == c["batch_size"])
            assert c["speedup_vs_dense"] == pytest.approx(c["answers_per_min"] / dense["answers_per_min"], rel=1e-3)
    tables = batches.batch_tables(report)
    assert len(tables) == 1  # no mismatch table when every answer is identical


def test_batch_summary_lists_every_answer_that_differs():
    def record(video, answer, new_tokens, error=None):
        return Record(video, "q", "m", "std", answer=answer, new_tokens=new_tokens, error=error,
                      gammas={"0": 1, "3": 2}, acceptance_rate=0.5,
                      stats=DecodeStats(drafted=6, accepted=3, gammas={0: 1, 3: 2}))

    keys = [("a", "q"), ("b", "q"), ("c", "q")]
    reference = {k: record(k[0], "a red circle", 4) for k in keys}
    failed = {"type": "RuntimeError", "message": "out of memory"}
    batched = {
        ("a", "q"): record("a", "a red circle", 4),
        ("b", "q"): record("b", "a red circle", 5),  # same text, one more token: not identical
        ("c", "q"): record("c", None, None, failed),
    }
    rounds = [(2.0, batched), (2.0, {**batched, ("a", "q"): record("a", "a blue circle", 4)})]
    summary = batches._batch_summary(batches.BatchConfig("std", 2, 3), rounds, [(1.0, reference)] * 2, keys)
    assert summary["identical_to_generate"] == 1 and summary["total"] == summary["runs"] == 6
    assert summary["answers"] == 4 and summary["failed"] == 2
    assert [(m["round"], m["video"], m["error"]) for m in summary["mismatches"]] == [
        (1, "b", None), (1, "c", failed), (2, "a", None), (2, "b", None), (2, "c", failed)
    ]
    assert summary["drafted"] == 24 and summary["accepted"] == 12 and summary["gammas"] == {"0": 4, "3": 8}
    assert summary["answers_per_min"] == 60 and summary["decoded_tokens"] == 14
    report = {"model": {"name": "m", "dtype": "float32", "device": "cpu"}, "environment": {"device_name": "cpu"},
              "settings": {"max_new_tokens": 8, "k": 2, "rounds": 1}, "inputs": [],
              "configs": batches._with_speedups([{**summary, "method": "generate", "gamma": None}, summary,
                                               {**summary, "method": "dense", "gamma": 0}])}
    assert len(batches.batch_tables(report)) == 2  # the mismatches get a table of their own


def test_batch_bench_cli_writes_json(tiny_checkpoint, videos, tmp_path):
    out = tmp_path / "batch.json"
    result = invoke([
        "bench", *videos, "--batch-size", "1,2", "--model", str(tiny_checkpoint("qwen2-vl")), "--device", "cpu",
        "--dtype", "float32", "--frames", "4", "--k", "2", "--gamma", "3", "--max-new-tokens", "4", "--repeat", "1",
        "--json", str(out), "-q",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["kind"] == "batch" and report["settings"]["batch_sizes"] == [1, 2]
    assert report["settings"]["gamma"] == [3] and report["settings"]["k"] == 2 and report["settings"]["rounds"] == 1
    assert [(c["method"], c["batch_size"]) for c in report["configs"]] == [
        ("generate", 1), ("dense", 1), ("std", 1), ("dense", 2), ("std", 2)
    ]
    assert all(c["identical_to_generate"] == c["total"] == 2 for c in report["configs"])
    assert "answers/min" in result.stderr and "2/2" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("stdcli: StD helped", "stdcli: StD did not raise")) and "one round" in last, last


def test_batch_bench_bad_values_exit_2(videos):
    for arguments, message in (
        (["--batch-size", "0"], "at least 1"),
        (["--batch-size", "2,x"], "whole numbers"),
        (["--batch-size", "1,2", "--frames", "4,8"], "--frames takes one value"),
        (["--batch-size", "2", "--k", "2,4"], "--k takes one value"),
        (["--batch-size", "2", "--gamma", "0"], "at least 1"),
        (["--batch-size", "2", "--context", "1024"], "--random-init"),
    ):
        result = invoke(["bench", videos[0], *arguments])
        assert result.exit_code == 2, arguments
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0] and message in lines[0], (arguments, lines)
