"""How a video and a question become model inputs: each family's frame-sampling defaults (those of its reference
code), its chat prompt, and the processor call with the sampled frames."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .loading import LoadedModel

@dataclass(frozen=True)
class FrameDefaults:
    fps: float | None  # frames per second to sample (None: a fixed count)
    num_frames: int | None  # fixed frame count (None: by fps)
    min_frames: int
    max_frames: int
    multiple_of: int  # frame count rounded to a multiple of this (Qwen: 2 frames per temporal patch)
    max_pixels: int | None  # frames are decoded no larger than this (aspect kept): bounds memory on long videos


# Qwen reference video settings (qwen-vl-utils): per-frame bounds of 128 to 768 merged patches, and a total budget
# (90% of 128000 tokens' worth of pixels) shared by all frames. A merged patch is 28x28 pixels for Qwen2-VL and
# Qwen2.5-VL (14-pixel patches), 32x32 for Qwen3-VL (16-pixel patches): qwen-vl-utils scales every bound by it.
QWEN_VIDEO_MIN_TOKENS = 128
QWEN_VIDEO_MAX_TOKENS = 768
QWEN_MODEL_SEQ_LEN = 128000
QWEN_VIDEO_MIN_PIXELS = QWEN_VIDEO_MIN_TOKENS * 28 * 28
QWEN_VIDEO_MAX_PIXELS = QWEN_VIDEO_MAX_TOKENS * 28 * 28
QWEN_VIDEO_TOTAL_PIXELS = int(QWEN_MODEL_SEQ_LEN * 28 * 28 * 0.9)
QWEN3_VL_FACTOR = 32
LLAVA_OV_FRAME_EDGE = 384

FRAME_DEFAULTS = {
    "qwen2-vl": FrameDefaults(2.0, None, 4, 768, 2, QWEN_VIDEO_MAX_PIXELS),
    "qwen2.5-vl": FrameDefaults(2.0, None, 4, 768, 2, QWEN_VIDEO_MAX_PIXELS),
    # 32 uniform frames, each resized to 384x384 by the processor; decoded up to 4x that many pixels so both sides
    # stay above 384 for aspect ratios up to 4:1.
    "llava-ov": FrameDefaults(None, 32, 1, 32, 1, 4 * LLAVA_OV_FRAME_EDGE**2),
    # qwen-vl-utils for Qwen3-VL (and Qwen3VLVideoProcessor's defaults): 2 fps, 4 to 768 frames, an even count
    "qwen3-vl": FrameDefaults(2.0, None, 4, 768, 2, QWEN_VIDEO_MAX_TOKENS * QWEN3_VL_FACTOR**2),
}
# Qwen3.5 ships Qwen3-VL's processors, and its model card samples videos with the same qwen-vl-utils recipe
FRAME_DEFAULTS["qwen3.5"] = FRAME_DEFAULTS["qwen3-vl"]
# Families whose prompts are Qwen3-VL's: frames resized by qwen-vl-utils, a timestamp before each temporal patch
QWEN3_VIDEO_FAMILIES = ("qwen3-vl", "qwen3.5")
# LLaVA-OneVision's own conversation template (qwen_1_5) always opens with this system prompt; the hf chat template
# adds none, Qwen's adds it itself.
DEFAULT_SYSTEM = {"llava-ov": "You are a helpful assistant."}
# Arguments of the chat template. Qwen3.5 thinks by default (its template opens "<think>" after the generation
# prompt): stdcli asks for the answer, as the model card's non-thinking recipe does, so the template closes an empty
# thought and the tokens go to the answer instead of a reasoning trace that the token limit would cut.
CHAT_TEMPLATE_ARGUMENTS: dict[str, dict[str, Any]] = {"qwen3.5": {"enable_thinking": False}}


def frame_defaults(family: str) -> FrameDefaults:
    if family not in FRAME_DEFAULTS:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FRAME_DEFAULTS)}")
    return FRAME_DEFAULTS[family]


def qwen_frame_pixel_bounds(
    num_frames: int, allowed: tuple[int, int], temporal_patch_size: int = 2, factor: int = 28
) -> tuple[int, int]:
    """Per-frame (min, max) pixels for a Qwen video of `num_frames` frames, as qwen-vl-utils computes them for merged
    patches of factor x factor pixels (28: Qwen2-VL, Qwen2.5-VL; 32: Qwen3-VL):

        min = 128 * factor**2
        max = max(min(768 * factor**2, TOTAL_PIXELS / num_frames * temporal_patch_size), 1.05 * min)

    so the frames share a total budget (TOTAL_PIXELS = 0.9 * 128000 * factor**2) and long videos get smaller frames.
    Both reference bounds are first clamped into the range the checkpoint's video processor allows (`allowed`), so a
    checkpoint configured for other sizes (tiny test models: 56*56 or 64*64 only) keeps its own. (Qwen3-VL's
    processor reads its `size` as bounds of a whole clip, 4096..25165824 pixels in the real checkpoints: the
    reference per-frame bounds lie within it, so clamping leaves them unchanged there.)
    """
    low, high = allowed
    min_pixels = min(max(QWEN_VIDEO_MIN_TOKENS * factor * factor, low), high)
    max_pixels = min(max(QWEN_VIDEO_MAX_TOKENS * factor * factor, low), high)
    total = int(QWEN_MODEL_SEQ_LEN * factor * factor * 0.9)
    shared = total * temporal_patch_size // max(num_frames, 1)
    return min_pixels, max(min(max_pixels, shared), int(min_pixels * 1.05))


def _qwen_frame_size(lm: LoadedModel, frames: int, height: int, width: int) -> tuple[int, int]:
    """(height, width) a Qwen processor resizes frames of height x width to, in a video of `frames` frames:
    smart_resize to multiples of the merged patch, within qwen_frame_pixel_bounds."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    processor = lm.processor.video_processor
    factor = processor.patch_size * processor.merge_size
    allowed = (processor.size["shortest_edge"], processor.size["longest_edge"])
    min_pixels, max_pixels = qwen_frame_pixel_bounds(frames, allowed, processor.temporal_patch_size, factor)
    resized: tuple[int, int] = smart_resize(height, width, factor, min_pixels, max_pixels)
    return resized


def visual_token_count(lm: LoadedModel, frames: int, height: int, width: int) -> int:
    """The video tokens the processor makes of `frames` frames of height x width, by the arithmetic of its resize
    (Qwen: smart_resize within the per-frame pixel bounds, one token per merged patch (28x28 pixels, Qwen3-VL 32x32)
    and temporal patch; LLaVA-OneVision: a fixed pooled grid per frame, plus one newline token): known before any
    frame is decoded. Only the placeholder tokens: Qwen3-VL's per-frame timestamps and vision start/end tokens are
    text of the prompt."""
    if lm.family == "llava-ov":
        side = math.ceil(int(math.sqrt(lm.processor.num_image_tokens)) / 2)
        return frames * side * side + 1
    processor = lm.processor.video_processor
    factor = processor.patch_size * processor.merge_size
    resized_height, resized_width = _qwen_frame_size(lm, frames, height, width)
    temporal = -(-frames // processor.temporal_patch_size)
    return temporal * (resized_height // factor) * (resized_width // factor)


def chat_messages(family: str, question: str, system: str | None, with_video: bool) -> list[dict[str, Any]]:
    """One user turn (the video, then the question) after an optional system message, in the processor's format."""
    system = system if system is not None else DEFAULT_SYSTEM.get(family)
    user = ([{"type": "video"}] if with_video else []) + [{"type": "text", "text": question}]
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system is not None else []
    return messages + [{"role": "user", "content": user}]


def video_metadata(video) -> dict[str, Any]:
    """Metadata of the frames as given: the processor's `sampled_fps` (Qwen2.5-VL's seconds per temporal patch) is
    then exactly video.sample_fps."""
    frames = video.frames
    return {
        "total_num_frames": len(frames),
        "fps": float(video.sample_fps) if video.sample_fps else None,
        "frames_indices": list(range(len(frames))),
        "duration": video.duration,
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
    }


def qwen3_video_metadata(video) -> dict[str, Any]:
    """Metadata of the frames in the source video, as qwen-vl-utils gives it to Qwen3-VL's processor: the stream's
    frame rate and the source index of every sampled frame. The processor writes the time of each temporal patch
    into the prompt as "<t seconds>", t the mean of index / fps over its two frames (an odd last frame is paired with
    itself), so the times are those of the frames in the video, whatever rate they were sampled at."""
    frames = video.frames
    return {
        "total_num_frames": int(getattr(video, "num_source_frames", 0) or max(video.indices) + 1),
        "fps": float(video.source_fps),
        "frames_indices": [int(i) for i in video.indices],
        "duration": video.duration,
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
    }


def qwen3_resized_frames(lm: LoadedModel, frames, device: torch.device | None = None):
    """Frames resized as qwen-vl-utils resizes a Qwen3-VL video before the processor sees it (which then runs with
    do_resize=False): per-frame smart_resize to multiples of 32 pixels within qwen_frame_pixel_bounds, bicubic with
    antialiasing on the uint8 frames (torchvision's resize, rounded back to uint8). With a `device`, resized there,
    and returned as a tensor on it."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    height, width = _qwen_frame_size(lm, len(frames), int(frames.shape[1]), int(frames.shape[2]))
    if (height, width) == tuple(frames.shape[1:3]):
        return frames
    tensor = torch.from_numpy(frames)
    tensor = (tensor if device is None else tensor.to(device)).permute(0, 3, 1, 2)
    resized = resize(tensor, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)
    resized = resized.permute(0, 2, 3, 1).contiguous()
    return resized.numpy() if device is None else resized


def qwen3_unwrapped_video(processor, text: str) -> str:
    """The chat text with each video's <|vision_start|><|video_pad|><|vision_end|> reduced to its <|video_pad|>.

    Qwen3-VL's reference prompt of a video is, per temporal patch, "<t seconds><|vision_start|>" + its tokens +
    "<|vision_end|>", with nothing around the whole: Qwen's own processor (transformers 4.57) replaced the chat
    template's wrapper together with the placeholder. transformers 5.x replaces only the placeholder, which leaves
    a second vision start before the first timestamp and a second vision end after the last frame; given the bare
    placeholder, 5.23's processor builds the reference prompt."""
    wrapped = f"{processor.vision_start_token}{processor.video_token}{processor.vision_end_token}"
    result: str = text.replace(wrapped, processor.video_token)
    return result


def _video_call_arguments(lm: LoadedModel, video) -> dict[str, Any]:
    if lm.family in QWEN3_VIDEO_FAMILIES:
        # frames resized already (qwen3_resized_frames), as the model card's qwen-vl-utils recipe does;
        # cap_pixels_per_frame only silences the warning about a cap that would apply to the processor's own resize
        return {"do_sample_frames": False, "video_metadata": [qwen3_video_metadata(video)], "do_resize": False,
                "cap_pixels_per_frame": False}
    arguments: dict[str, Any] = {"do_sample_frames": False, "video_metadata": [video_metadata(video)]}
    if lm.family in ("qwen2-vl", "qwen2.5-vl"):
        processor = lm.processor.video_processor
        allowed = (processor.size["shortest_edge"], processor.size["longest_edge"])
        min_pixels, max_pixels = qwen_frame_pixel_bounds(len(video.frames), allowed, processor.temporal_patch_size)
        # Our own cap replaces the processor's optional one (cap_pixels_per_frame), which would otherwise warn.
        arguments.update(size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, cap_pixels_per_frame=False)
    return arguments


def _check_frames(frames) -> None:
    shape = getattr(frames, "shape", ())
    if len(shape) != 4 or shape[-1] != 3 or shape[0] < 1 or str(frames.dtype) != "uint8":
        raise ValueError(f"video frames must be a (T, H, W, 3) uint8 RGB array with T >= 1, got {shape}")


def _to_model(batch: Mapping[str, Any], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Tensors on the model's device; pixel values in the model's dtype. Other floats (second_per_grid_ts) stay
    float32: positions are truncated from them, and bfloat16 rounding could move a frame to the next position."""
    inputs = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            inputs[key] = value.to(device, dtype) if key.startswith("pixel_values") else value.to(device)
    return inputs


def processor_device(lm: LoadedModel) -> torch.device | None:
    """Where the video processor resizes and normalizes the frames: on the model's GPU (transformers' fast video
    processors take `device=`, 5.17 to 5.23 alike), else None: on the CPU, as the processor does by default."""
    return lm.device if lm.device.type == "cuda" else None


def chat_text(lm: LoadedModel, question: str, system: str | None, with_video: bool) -> str:
    """The chat prompt as text, a video (if any) as the one placeholder token the processor expands."""
    text: str = lm.processor.apply_chat_template(chat_messages(lm.family, question, system, with_video),
                                                 add_generation_prompt=True, tokenize=False,
                                                 **CHAT_TEMPLATE_ARGUMENTS.get(lm.family, {}))
    if with_video and lm.family in QWEN3_VIDEO_FAMILIES:
        text = qwen3_unwrapped_video(lm.processor, text)
    return text


# What a text token holds in the processor's per-token outputs beside input_ids.
TEXT_TOKEN_VALUES = {"attention_mask": 1, "mm_token_type_ids": 0}


def question_tail(lm: LoadedModel, question: str, system: str | None = None) -> list[int]:
    """The tokens of a prompt about a video that follow the video: the question and the chat template's end. In the
    processor's prompt a special token precedes them (the last video token, or Qwen3-VL's vision end) as the
    placeholder does here, so they are tokenized alike."""
    tokenizer = lm.processor.tokenizer
    ids: list[int] = tokenizer(chat_text(lm, question, system, with_video=True))["input_ids"]
    placeholder = tokenizer.convert_tokens_to_ids(lm.processor.video_token)
    if ids.count(placeholder) != 1:
        raise ValueError("the question must not hold the video's placeholder token")
    tail = ids[ids.index(placeholder) + 1 :]
    if set(tail) & set(lm.visual_token_ids):
        raise ValueError("the question must not hold image or video placeholder tokens")
    return tail


def shared_prefix_length(lm: LoadedModel, inputs: dict[str, torch.Tensor], question: str,
                         system: str | None = None) -> int:
    """How many first tokens of `inputs` (build_inputs of `question` about a video) every question about that video
    shares: all but the question's tail."""
    ids, tail = inputs["input_ids"][0].tolist(), question_tail(lm, question, system)
    if ids[len(ids) - len(tail) :] != tail:
        raise ValueError("the prompt does not end with its question: it cannot be shared with other questions")
    return len(ids) - len(tail)


def with_question(lm: LoadedModel, inputs: dict[str, torch.Tensor], prefix_length: int, question: str,
                  system: str | None = None) -> dict[str, torch.Tensor]:
    """The prompt of `question` about the video of `inputs`, as build_inputs makes it, without running the processor
    on the frames again: the first `prefix_length` tokens of `inputs` (shared_prefix_length), then the question's
    tail; the pixel values and grids are those of `inputs` (the same tensors, not copies)."""
    ids = inputs["input_ids"]
    tail = torch.tensor([question_tail(lm, question, system)], dtype=ids.dtype, device=ids.device)
    prompt = dict(inputs, input_ids=torch.cat([ids[:, :prefix_length], tail], 1))
    for key, value in TEXT_TOKEN_VALUES.items():
        if key in inputs:
            prompt[key] = torch.cat([inputs[key][:, :prefix_length], torch.full_like(tail, value)], 1)
    return prompt


def build_inputs(lm: LoadedModel, video, question: str, system: str | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for one chat turn: optional system message, the user's video (already sampled frames, None for a
    text-only prompt) then question, and the generation prompt.

    Keys: input_ids, attention_mask and, with a video, pixel_values_videos plus the family's own (Qwen:
    video_grid_thw and mm_token_type_ids, Qwen2.5-VL: second_per_grid_ts from video.sample_fps; LLaVA-OV: none).
    Qwen3-VL's (and Qwen3.5's) prompt also holds the time of each temporal patch, as text before its frame's vision
    tokens. On a GPU the frames are resized and normalized there (processor_device); on the CPU as the processor
    does.
    """
    text = chat_text(lm, question, system, video is not None)
    if video is None:
        batch = lm.processor(text=[text], return_tensors="pt")
    else:
        _check_frames(video.frames)
        arguments = _video_call_arguments(lm, video)
        device = processor_device(lm)
        if device is not None:
            arguments["device"] = device
        frames = video.frames
        if lm.family in QWEN3_VIDEO_FAMILIES:
            frames = qwen3_resized_frames(lm, frames, device)
        batch = lm.processor(text=[text], videos=[frames], return_tensors="pt", **arguments)
    return _to_model(batch, lm.device, lm.dtype)
