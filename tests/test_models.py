"""Model building (stdcli.model.build) and the registry / loading / prompt building of stdcli.model, on tiny
checkpoints."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch

from stdcli.model import build, loading, prompts, registry
from stdcli.model.adapter import prompt_positions
from stdcli.model.loading import load_model
from stdcli.model.prompts import build_inputs
from stdcli.model.registry import ModelLoadError, resolve_model

FAMILIES = build.FAMILIES
UTF8_SAMPLES = ["¿Qué pasa? 视频 🎥", "naïve café — “quotes” ½ ∑ 👩‍👩‍👧", "tabs\tand\nnewlines\r\n  ",
                "\x00\x7f\u200b日本語"]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    """loaded(family) -> the family's tiny checkpoint loaded on the CPU in float32 (once per module)."""
    cache: dict[str, loading.LoadedModel] = {}

    def load(family: str) -> loading.LoadedModel:
        if family not in cache:
            cache[family] = load_model(str(tiny_checkpoint(family)), device="cpu", dtype="float32")
        return cache[family]

    return load


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, so that what a developer has downloaded does not change the results."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def put_in_hf_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """Lay `checkpoint` out as the hub client caches a download of `repo_id` (refs/main -> snapshots/<commit>)."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def one_line_error(call) -> str:
    with pytest.raises(ModelLoadError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message
    return message


# --- build: tokenizer, processor, config, model ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_round_trips_any_utf8(family, tiny_checkpoint):
    from transformers import AutoTokenizer

    made = build.make_tokenizer(family)
    reloaded = AutoTokenizer.from_pretrained(tiny_checkpoint(family))
    assert type(made).__name__ == type(reloaded).__name__ == ("Qwen3_5Tokenizer" if family == "qwen3.5"
                                                                else "Qwen2Tokenizer")
    for text in UTF8_SAMPLES:
        ids = made(text)["input_ids"]
        assert made.decode(ids) == text
        assert reloaded(text)["input_ids"] == ids


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_added_tokens_follow_the_bpe_in_real_order(family):
    tokenizer = build.make_tokenizer(family)
    ids = build.special_token_ids(family, tokenizer)
    first = ids["<|endoftext|>"]
    assert list(ids.values()) == list(range(first, first + len(ids))) and len(tokenizer) == first + len(ids)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # a special token in text is one token, and is dropped by skip_special_tokens
    encoded = tokenizer("<|im_start|>user")["input_ids"]
    assert encoded[0] == ids["<|im_start|>"]
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "user"


def test_real_token_ids_are_the_checkpoints():
    qwen = build.special_token_ids("qwen2-vl")
    assert (qwen["<|vision_start|>"], qwen["<|image_pad|>"], qwen["<|video_pad|>"]) == (151652, 151655, 151656)
    llava = build.special_token_ids("llava-ov")
    assert (llava["<|im_end|>"], llava["<image>"], llava["<video>"]) == (151645, 151646, 151647)
    qwen3 = build.special_token_ids("qwen3-vl")
    assert (qwen3["<|vision_start|>"], qwen3["<|video_pad|>"], qwen3["<tool_call>"]) == (151652, 151656, 151657)
    assert (qwen3["<tool_response>"], qwen3["<think>"], qwen3["</think>"]) == (151665, 151667, 151668)
    config = build.make_config("qwen3-vl", "8b")
    assert (config.image_token_id, config.video_token_id, config.vision_start_token_id) == (151655, 151656, 151652)
    # Qwen3.5's larger BPE moves them (Qwen/Qwen3.5-9B's config.json: eos 248044, vision 248053..248057)
    qwen35 = build.special_token_ids("qwen3.5")
    assert (qwen35["<|endoftext|>"], qwen35["<|im_end|>"], qwen35["<|vision_end|>"]) == (248044, 248046, 248054)
    config = build.make_config("qwen3.5", "9b")
    assert (config.image_token_id, config.video_token_id, config.vision_start_token_id) == (248056, 248057, 248053)


@pytest.mark.parametrize(
    ("family", "scale", "billions"),
    [("qwen2-vl", "7b", 8.291), ("qwen2-vl", "2b", 2.209), ("qwen2.5-vl", "7b", 8.292), ("llava-ov", "7b", 8.031),
     ("qwen3-vl", "8b", 8.767), ("qwen3-vl", "2b", 2.128), ("qwen3.5", "9b", 9.410), ("qwen3.5", "27b", 27.357)],
)
def test_real_scale_configs_have_the_real_parameter_counts(family, scale, billions):
    model = build.build_random_model(family, build.make_config(family, scale), device="meta", dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.001)


def test_hybrid_configs_have_the_real_layout():
    """Qwen3.5: full attention in every fourth layer, so a KV cache in a quarter of them (the engine's cache holds
    those); the tiny checkpoint has both kinds, full attention every second layer."""
    from stdcli.model.adapter import cache_dims

    for scale, layers in (("9b", 32), ("27b", 64)):
        text = build.make_config("qwen3.5", scale).get_text_config()
        assert text.layer_types == ["linear_attention"] * 3 + ["full_attention"] + text.layer_types[4:]
        assert len(text.layer_types) == layers and text.layer_types.count("full_attention") == layers // 4
    with torch.device("meta"):
        model = build.MODEL_CLASSES["qwen3.5"]._from_config(build.make_config("qwen3.5", "9b"), dtype=torch.bfloat16)
    dims = cache_dims(model)
    assert dims.attention_layers == tuple(range(3, 32, 4)) and dims.kv_bytes_per_token == 8 * 2 * 4 * 256 * 2
    assert dims.linear is not None and len(dims.linear.layers) == 24
    # per sequence: a width-4 convolution over q, k, v (2 x 16 x 128 + 32 x 128 channels) and 32 128x128 states
    assert dims.linear.state_bytes == 24 * (8192 * 4 * 2 + 32 * 128 * 128 * 4)
    tiny = build.make_config("qwen3.5").get_text_config()
    assert tiny.layer_types == ["linear_attention", "full_attention"] * 2
    assert tiny.linear_num_value_heads > tiny.linear_num_key_heads  # key heads shared by value heads, as in 16 / 32


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_config_exercises_grouped_query_attention(family):
    text = build.make_config(family).get_text_config()
    assert text.num_attention_heads > text.num_key_value_heads > 0
    overridden = build.make_config(family, text_config={"num_hidden_layers": 3}).get_text_config()
    assert overridden.num_hidden_layers == 3 and overridden.hidden_size == text.hidden_size


def test_random_models_are_deterministic_per_seed():
    config = build.make_config("qwen2-vl")
    first, again, other = (build.build_random_model("qwen2-vl", config, seed=s) for s in (0, 0, 1))
    weight = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_unknown_family_and_scale_are_refused():
    with pytest.raises(ValueError, match="unknown model family"):
        build.make_tokenizer("gpt-4v")
    with pytest.raises(ValueError, match="no '2b' scale"):
        build.make_config("llava-ov", "2b")


# --- loading tiny checkpoints and building inputs -------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_renders_the_family_prompt(family, loaded):
    lm = loaded(family)
    messages = prompts.chat_messages(family, "What happens?", None, with_video=True)
    arguments = prompts.CHAT_TEMPLATE_ARGUMENTS.get(family, {})
    text = lm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **arguments)
    video = "<video>\n" if family == "llava-ov" else "<|vision_start|><|video_pad|><|vision_end|>"
    # Qwen3-VL's and Qwen3.5's templates add no system prompt of their own, and their reference code passes none
    system = "" if family in build.QWEN3_VISION else "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    # Qwen3.5 is asked for the answer: its template closes an empty thought
    answer = "<think>\n\n</think>\n\n" if family == "qwen3.5" else ""
    assert text == f"{system}<|im_start|>user\n{video}What happens?<|im_end|>\n<|im_start|>assistant\n{answer}"


def test_qwen35_template_thinks_unless_asked_for_the_answer(loaded):
    """Qwen3.5's own template opens a thought after the generation prompt; stdcli's prompts pass enable_thinking=False
    (the model card's non-thinking recipe), so the answer's tokens are the answer."""
    lm = loaded("qwen3.5")
    messages = prompts.chat_messages("qwen3.5", "What happens?", None, with_video=False)
    assert lm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False).endswith(
        "<|im_start|>assistant\n<think>\n")
    prompt = lm.tokenizer.decode(build_inputs(lm, None, "What happens?")["input_ids"][0])
    assert prompt == "<|im_start|>user\nWhat happens?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_answers_a_video_question(family, loaded, make_video, one_thread):
    lm = loaded(family)
    assert (lm.family, lm.device, lm.dtype, lm.model.training) == (family, torch.device("cpu"), torch.float32, False)
    inputs = build_inputs(lm, make_video(), "What happens in the video?")
    assert inputs["pixel_values_videos"].dtype == torch.float32
    assert all(t.device.type == "cpu" for t in inputs.values())
    output = lm.model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(new) == 8 and len(set(new)) >= 4  # random but not flat: greedy does not repeat one token
    assert isinstance(lm.tokenizer.decode(new, skip_special_tokens=True), str)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_prompt_works(family, loaded, one_thread):
    lm = loaded(family)
    inputs = build_inputs(lm, None, "¿Qué pasa? 🎥", system="Answer briefly.")
    assert not any(key.startswith("pixel_values") for key in inputs)
    prompt = lm.tokenizer.decode(inputs["input_ids"][0])
    assert prompt.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n") and "¿Qué pasa? 🎥" in prompt
    output = lm.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 4


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_frames", [4, 7, 24])
def test_processor_keeps_the_given_frames(family, num_frames, loaded, make_video):
    lm = loaded(family)
    inputs = build_inputs(lm, make_video(num_frames=num_frames, height=60, width=90), "Describe it.")
    visual = sum(int((inputs["input_ids"] == i).sum()) for i in lm.visual_token_ids)
    if family == "llava-ov":
        assert inputs["pixel_values_videos"].shape[:2] == (1, num_frames)
        assert visual == num_frames * 2 * 2 + 1  # 56x56 frames: 4x4 patches pooled to 2x2, plus one newline token
    else:
        temporal = -(-num_frames // 2)  # two frames per temporal patch, an odd count padded with its last frame
        grid_t, grid_h, grid_w = inputs["video_grid_thw"][0].tolist()
        patch, budget = (16, 64 * 64) if family in build.QWEN3_VISION else (14, 56 * 56)
        assert grid_t == temporal and grid_h * grid_w * patch * patch <= int(budget * 1.05)  # the tiny per-frame budget
        assert visual == temporal * grid_h * grid_w // 4  # 2x2 patches merge into one token
        assert int(inputs["mm_token_type_ids"].sum()) == 2 * visual  # video tokens are type 2


@pytest.mark.parametrize("family", FAMILIES)
def test_the_processor_given_a_device_makes_the_same_inputs(family, loaded, make_video, monkeypatch):
    """The path of a GPU (frames handed over as a tensor, `device=` to the processor), run on the CPU, is the CPU
    path bit for bit: what a GPU changes is only its own arithmetic (the next test)."""
    lm = loaded(family)
    video = make_video(num_frames=6, height=80, width=100)  # no multiple of any patch: every family resizes
    plain = build_inputs(lm, video, "Describe it.")
    monkeypatch.setattr(prompts, "processor_device", lambda lm: torch.device("cpu"))
    given = build_inputs(lm, video, "Describe it.")
    assert plain.keys() == given.keys() and all(torch.equal(plain[k], given[k]) for k in plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_frames_processed_on_the_gpu_match_the_cpu(family, loaded, tiny_checkpoint, make_video):
    video = make_video(num_frames=6, height=80, width=100)
    on_cpu = build_inputs(loaded(family), video, "Describe it.")
    on_gpu = build_inputs(load_model(str(tiny_checkpoint(family)), device="cuda", dtype="float32"), video,
                          "Describe it.")
    assert on_cpu.keys() == on_gpu.keys()
    for key, value in on_cpu.items():
        gpu = on_gpu[key]
        assert gpu.device.type == "cuda" and gpu.shape == value.shape and gpu.dtype == value.dtype, key
        if value.is_floating_point():
            # the GPU's bicubic resampling sums in another order, so a pixel rounded back to uint8 may land one
            # step away: 1/255 of the range, about 0.015 once normalized
            torch.testing.assert_close(gpu.cpu(), value, atol=0.05, rtol=0, msg=key)
        else:
            assert torch.equal(gpu.cpu(), value), key


@pytest.mark.parametrize("fps", [1.0, 2.0, 6.0])
def test_qwen25_seconds_per_temporal_patch_come_from_the_sampling_rate(fps, loaded, make_video):
    video = make_video(num_frames=8, fps=fps)
    inputs = build_inputs(loaded("qwen2.5-vl"), video, "When does it move?")
    assert inputs["second_per_grid_ts"].dtype == torch.float32
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / video.sample_fps])


def as_published_qwen_checkpoint(tiny: Path, folder: Path) -> Path:
    """The tiny checkpoint in the layout of the Qwen hub repositories: the image processor's preprocessor_config.json
    (min/max_pixels, no "size") and chat_template.json, no video processor config, no nested processor_config.json."""
    shutil.copytree(tiny, folder)
    (folder / "processor_config.json").unlink()
    (folder / "chat_template.jinja").unlink()
    clip_mean, clip_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    preprocessor = {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": clip_mean,
        "image_std": clip_std,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": build.QWEN2_VL_CHAT_TEMPLATE}))
    return folder


def test_published_qwen_layout_gets_the_reference_video_bounds(tiny_checkpoint, tmp_path, make_video, monkeypatch):
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    for cls in (Qwen2VLImageProcessor, Qwen2VLVideoProcessor):  # 5.17 writes min/max_pixels into the class default
        monkeypatch.setattr(cls, "size", dict(cls.size))
    folder = as_published_qwen_checkpoint(tiny_checkpoint("qwen2.5-vl"), tmp_path / "published")
    lm = load_model(str(folder), device="cpu")
    # without a video config the video processor takes the image bounds (up to 12845056 pixels per frame) ...
    assert lm.processor.video_processor.size["longest_edge"] == 12845056
    inputs = build_inputs(lm, make_video(num_frames=4), "What happens?")
    # ... but frames get the reference 128*28*28 minimum: 56x56 is upscaled to 336x336 = 24x24 patches
    assert inputs["video_grid_thw"].tolist() == [[2, 24, 24]]
    assert inputs["second_per_grid_ts"].tolist() == [1.0]
    assert lm.processor.apply_chat_template(
        prompts.chat_messages("qwen2.5-vl", "Hi", None, with_video=False), tokenize=False
    ).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("frames, height, width", [(2, 56, 56), (6, 100, 40), (12, 33, 90)])
def test_visual_tokens_are_known_before_the_processor_runs(family, frames, height, width, loaded, make_video):
    """The count the memory and context checks use is the processor's own, for any frame size."""
    lm = loaded(family)
    inputs = build_inputs(lm, make_video(frames, height, width), "What happens?")
    _, visual = lm.engine.adapter.layout(inputs)
    assert prompts.visual_token_count(lm, frames, height, width) == visual


def test_qwen3_prompt_has_the_time_of_every_temporal_patch(loaded, make_video):
    """Qwen3-VL's prompt of a video, as its reference code builds it: per temporal patch "<t seconds>" (t the mean
    time of its two frames in the source video, an odd last frame paired with itself), then the patch's tokens
    between vision start and end, and no wrapper around the whole video."""
    lm = loaded("qwen3-vl")
    video = make_video(num_frames=5, fps=1.0)  # frames 0, 30, 60, 90, 120 of a 30 fps source: 0 s to 4 s
    inputs = build_inputs(lm, video, "When?")
    text = lm.tokenizer.decode(inputs["input_ids"][0])
    frame = "<|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"  # 64x64 frames: 2x2 merged patches
    video_text = f"<0.5 seconds>{frame}<2.5 seconds>{frame}<4.0 seconds>{frame}"
    assert text == f"<|im_start|>user\n{video_text}When?<|im_end|>\n<|im_start|>assistant\n"
    # the times come from the source indices and frame rate, not from the sampling rate or the frame count
    video.indices, video.source_fps = [i + 45 for i in video.indices], 15.0  # from 3 s on, in a 15 fps stream
    times = re.findall(r"<([0-9.]+) seconds>", lm.tokenizer.decode(build_inputs(lm, video, "When?")["input_ids"][0]))
    assert times == ["4.0", "8.0", "11.0"]
    # timestamps are text: token type 0, and never video placeholders
    stamp = lm.tokenizer("<0.5 seconds>")["input_ids"]
    assert not set(stamp) & set(lm.visual_token_ids)
    assert int(inputs["mm_token_type_ids"].sum()) == 2 * 12 and inputs["video_grid_thw"].tolist() == [[3, 4, 4]]


def test_qwen3_positions_continue_from_the_prompt_like_generate(loaded, make_video):
    """Qwen3-VL's M-RoPE positions: text counts on, each temporal patch's tokens get (start, start + row,
    start + column) and the text after it continues from start + the larger side, so the prompt's last position is
    its largest, and generate() continues every row by one per token from there."""
    lm = loaded("qwen3-vl")
    inputs = build_inputs(lm, make_video(num_frames=4, height=32, width=128), "What?")
    positions = prompt_positions(lm.model, inputs)
    assert positions.shape == (3, 1, inputs["input_ids"].shape[1])
    is_video = inputs["input_ids"][0] == lm.visual_token_ids[-1]
    first = int(is_video.nonzero()[0])  # the first temporal patch: 1x4 merged patches, after its timestamp
    assert positions[:, 0, first : first + 4].tolist() == [[first] * 4, [first] * 4, [first + c for c in range(4)]]
    assert positions[:, 0, first + 4].tolist() == [first + 4] * 3  # <|vision_end|>: start + the longer side
    assert int(positions.max()) == int(positions[0, 0, -1]) == int(positions[2, 0, -1])
    # what generate() computes for the same prompt (text row first, then the three M-RoPE rows)
    model_kwargs = {key: value for key, value in inputs.items() if key != "input_ids"}
    generated = lm.model._prepare_position_ids_for_generation(inputs["input_ids"], dict(model_kwargs))
    assert torch.equal(generated[1:], positions)


def test_qwen3_real_bounds_give_reference_frames(tiny_checkpoint, make_video):
    """With the real checkpoint's processor (video size 4096..25165824 pixels per clip), frames get qwen-vl-utils'
    per-frame bounds for 32-pixel merged patches: 56x56 frames are scaled up to 128*32*32 pixels, 384x384."""
    lm = load_model(str(tiny_checkpoint("qwen3-vl")), device="cpu", dtype="float32")
    lm.processor = build.make_processor("qwen3-vl", lm.tokenizer)
    assert lm.processor.video_processor.size == {"shortest_edge": 4096, "longest_edge": 25165824}
    inputs = build_inputs(lm, make_video(num_frames=4), "What happens?")
    assert inputs["video_grid_thw"].tolist() == [[2, 24, 24]]  # 16-pixel patches
    assert prompts.visual_token_count(lm, 4, 56, 56) == 2 * 12 * 12
    # 1080p: at most 768 merged patches per frame, 640x1152 pixels (20x36)
    assert prompts.visual_token_count(lm, 6, 1080, 1920) == 3 * 20 * 36


def test_bad_frames_are_refused(loaded, make_video):
    video = make_video()
    video.frames = video.frames.astype("float32")
    with pytest.raises(ValueError, match="uint8"):
        build_inputs(loaded("qwen2-vl"), video, "?")


def test_qwen_frame_budget_follows_the_reference_formula():
    allowed = (56 * 56, 28 * 28 * 16384)  # a real checkpoint whose video processor took the image bounds
    assert prompts.qwen_frame_pixel_bounds(8, allowed) == (128 * 28 * 28, 768 * 28 * 28)
    assert prompts.qwen_frame_pixel_bounds(768, allowed) == (128 * 28 * 28, int(128000 * 28 * 28 * 0.9) * 2 // 768)
    assert prompts.qwen_frame_pixel_bounds(100000, allowed) == (128 * 28 * 28, int(128 * 28 * 28 * 1.05))
    assert prompts.qwen_frame_pixel_bounds(8, (56 * 56, 56 * 56)) == (56 * 56, int(56 * 56 * 1.05))
    # Qwen3-VL: 32-pixel merged patches; the real video processor's size (per clip) leaves the bounds unchanged
    real = (4096, 25165824)
    assert prompts.qwen_frame_pixel_bounds(8, real, factor=32) == (128 * 32 * 32, 768 * 32 * 32)
    assert prompts.qwen_frame_pixel_bounds(768, real, factor=32) == (128 * 32 * 32, int(128000 * 32 * 32 * 0.9) // 384)


def test_frame_defaults():
    qwen = prompts.frame_defaults("qwen2.5-vl")
    assert (qwen.fps, qwen.num_frames, qwen.min_frames, qwen.max_frames, qwen.multiple_of) == (2.0, None, 4, 768, 2)
    llava = prompts.frame_defaults("llava-ov")
    assert (llava.fps, llava.num_frames, llava.multiple_of) == (None, 32, 1)
    qwen3 = prompts.frame_defaults("qwen3-vl")
    assert (qwen3.fps, qwen3.num_frames, qwen3.min_frames, qwen3.max_frames) == (2.0, None, 4, 768)
    assert qwen3.multiple_of == 2 and qwen3.max_pixels == 768 * 32 * 32
    assert prompts.frame_defaults("qwen3.5") == qwen3  # Qwen3-VL's processors and sampling recipe
    with pytest.raises(ValueError):
        prompts.frame_defaults("nope")


def test_loaded_model_knows_its_special_tokens(loaded):
    lm = loaded("qwen2-vl")
    ids = build.special_token_ids("qwen2-vl", lm.tokenizer)
    assert lm.visual_token_ids == (ids["<|image_pad|>"], ids["<|video_pad|>"])
    assert lm.eos_token_ids == (ids["<|im_end|>"], ids["<|endoftext|>"])


# --- registry and load errors ---------------------------------------------------------------------------------------


def test_aliases_resolve_to_their_repositories(empty_hf_cache):
    expected = {
        "qwen2-vl": "Qwen/Qwen2-VL-7B-Instruct",
        "qwen2-vl-2b": "Qwen/Qwen2-VL-2B-Instruct",
        "qwen2.5-vl": "Qwen/Qwen2.5-VL-7B-Instruct",
        "llava-ov": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        "qwen3-vl": "Qwen/Qwen3-VL-8B-Instruct",
        "qwen3-vl-2b": "Qwen/Qwen3-VL-2B-Instruct",
        "qwen3-vl-4b": "Qwen/Qwen3-VL-4B-Instruct",
        "qwen3-vl-32b": "Qwen/Qwen3-VL-32B-Instruct",
        "qwen3.5": "Qwen/Qwen3.5-9B",
        "qwen3.5-0.8b": "Qwen/Qwen3.5-0.8B",
        "qwen3.5-2b": "Qwen/Qwen3.5-2B",
        "qwen3.5-4b": "Qwen/Qwen3.5-4B",
        "qwen3.5-27b": "Qwen/Qwen3.5-27B",
    }
    assert {alias: spec.repo_id for alias, spec in registry.REGISTRY.items() if spec.repo_id} == expected
    rows = {row.name: row for row in registry.list_models()}
    assert list(rows) == list(registry.REGISTRY) and registry.DEFAULT_MODEL == "builtin"
    for alias, repo_id in expected.items():
        row = rows[alias]
        assert (row.kind, row.location, row.available) == ("alias", repo_id, False)
        assert f"hf download {repo_id}" in row.detail


def test_cached_hub_model_resolves_and_loads_offline(empty_hf_cache, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: pytest.fail("the hub must not be contacted"))
    snapshot = put_in_hf_cache(empty_hf_cache, "Qwen/Qwen2-VL-2B-Instruct", tiny_checkpoint("qwen2-vl"))
    resolved = resolve_model("qwen2-vl-2b")
    assert (resolved.kind, resolved.location, resolved.family, resolved.available) == (
        "alias",
        str(snapshot),
        "qwen2-vl",
        True,
    )
    assert load_model("Qwen/Qwen2-VL-2B-Instruct", device="cpu").family == "qwen2-vl"


def test_missing_hub_id_fails_fast_with_one_line(empty_hf_cache):
    resolved = resolve_model("stdcli-tests/no-such-model")
    assert (resolved.kind, resolved.available) == ("hub", False)
    started = time.perf_counter()
    message = one_line_error(lambda: load_model("stdcli-tests/no-such-model", device="cpu"))
    assert time.perf_counter() - started < 2
    assert "not in the local Hugging Face cache" in message and "hf download stdcli-tests/no-such-model" in message


def test_unreachable_hub_fails_fast_when_not_offline(empty_hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    message = one_line_error(lambda: load_model("qwen2.5-vl", device="cpu"))
    assert "the hub cannot be reached" in message and "hf download Qwen/Qwen2.5-VL-7B-Instruct" in message


def test_unknown_bare_name_lists_the_aliases(empty_hf_cache):
    message = one_line_error(lambda: load_model("qwen2vl", device="cpu"))
    assert "not an alias" in message and "qwen2.5-vl" in message


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nowhere" / "model"
    assert resolve_model(str(missing)).kind == "path"
    assert "no such folder" in one_line_error(lambda: load_model(str(missing), device="cpu"))


def test_folder_without_config(tmp_path):
    assert "no config.json" in one_line_error(lambda: load_model(str(tmp_path), device="cpu"))


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    message = one_line_error(lambda: load_model(str(tmp_path), device="cpu"))
    assert "unsupported architecture BertModel" in message and "Qwen2VLForConditionalGeneration" in message


def test_folder_without_weights(tmp_path, tiny_checkpoint):
    shutil.copy(tiny_checkpoint("qwen2-vl") / "config.json", tmp_path)
    assert "no weights" in one_line_error(lambda: load_model(str(tmp_path), device="cpu"))


def test_broken_weights_become_a_load_error(tmp_path, tiny_checkpoint):
    shutil.copytree(tiny_checkpoint("qwen2-vl"), tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    assert "cannot load" in one_line_error(lambda: load_model(str(tmp_path / "model"), device="cpu"))


@pytest.mark.parametrize(("device", "dtype", "expected"), [("tpu9", "auto", "device"), ("cpu", "int3", "dtype")])
def test_bad_device_and_dtype_strings(device, dtype, expected, tiny_checkpoint):
    message = one_line_error(lambda: load_model(str(tiny_checkpoint("qwen2-vl")), device=device, dtype=dtype))
    assert f"unknown {expected}" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu(tiny_checkpoint):
    assert "no CUDA GPU" in one_line_error(lambda: load_model(str(tiny_checkpoint("qwen2-vl")), device="cuda"))


def test_auto_device_and_dtype():
    device = loading.pick_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loading.pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert loading.pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_builtin_without_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path)
    resolved = resolve_model("builtin")
    assert (resolved.kind, resolved.family, resolved.available) == ("builtin", "qwen2-vl", False)
    message = one_line_error(lambda: load_model("builtin", device="cpu"))
    assert "built-in model's weights are not in this install yet" in message and "--model" in message
