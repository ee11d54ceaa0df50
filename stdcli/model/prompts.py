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


# Qwen reference video settings (qwen-vl-utils): per-frame pixel bounds, and a total budget (90% of 128000 tokens'
# worth of pixels) shared by all frames.
QWEN_VIDEO_MIN_PIXELS = 128 * 28 * 28
QWEN_VIDEO_MAX_PIXELS = 768 * 28 * 28
QWEN_VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
LLAVA_OV_FRAME_EDGE = 384

FRAME_DEFAULTS = {
    "qwen2-vl": FrameDefaults(2.0, None, 4, 768, 2, QWEN_VIDEO_MAX_PIXELS),
    "qwen2.5-vl": FrameDefaults(2.0, None, 4, 768, 2, QWEN_VIDEO_MAX_PIXELS),
    # 32 uniform frames, each resized to 384x384 by the processor; decoded up to 4x that many pixels so both sides
    # stay above 384 for aspect ratios up to 4:1.
    "llava-ov": FrameDefaults(None, 32, 1, 32, 1, 4 * LLAVA_OV_FRAME_EDGE**2),
}
# LLaVA-OneVision's own conversation template (qwen_1_5) always opens with this system prompt; the hf chat template
# adds none, Qwen's adds it itself.
DEFAULT_SYSTEM = {"llava-ov": "You are a helpful assistant."}


def frame_defaults(family: str) -> FrameDefaults:
    if family not in FRAME_DEFAULTS:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FRAME_DEFAULTS)}")
    return FRAME_DEFAULTS[family]


def qwen_frame_pixel_bounds(num_frames: int, allowed: tuple[int, int], temporal_patch_size: int = 2) -> tuple[int, int]:
    """Per-frame (min, max) pixels for a Qwen video of `num_frames` frames, as qwen-vl-utils computes them:

        min = 128*28*28
        max = max(min(768*28*28, TOTAL_PIXELS / num_frames * temporal_patch_size), 1.05 * min)

    so the frames share a total budget (TOTAL_PIXELS = 0.9 * 128000 * 28*28) and long videos get smaller frames.
    Both reference bounds are first clamped into the range the checkpoint's video processor allows (`allowed`), so a
    checkpoint configured for other sizes (tiny test models: 56*56 only) keeps its own.
    """
    low, high = allowed
    min_pixels = min(max(QWEN_VIDEO_MIN_PIXELS, low), high)
    max_pixels = min(max(QWEN_VIDEO_MAX_PIXELS, low), high)
    shared = QWEN_VIDEO_TOTAL_PIXELS * temporal_patch_size // max(num_frames, 1)
    return min_pixels, max(min(max_pixels, shared), int(min_pixels * 1.05))


def visual_token_count(lm: LoadedModel, frames: int, height: int, width: int) -> int:
    """The video tokens the processor makes of `frames` frames of height x width, by the arithmetic of its resize
    (Qwen: smart_resize within the per-frame pixel bounds, one token per 28x28 pixels and temporal patch;
    LLaVA-OneVision: a fixed pooled grid per frame, plus one newline token): known before any frame is decoded."""
    if lm.family == "llava-ov":
        side = math.ceil(int(math.sqrt(lm.processor.num_image_tokens)) / 2)
        return frames * side * side + 1
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    processor = lm.processor.video_processor
    factor = processor.patch_size * processor.merge_size
    allowed = (processor.size["shortest_edge"], processor.size["longest_edge"])
    min_pixels, max_pixels = qwen_frame_pixel_bounds(frames, allowed, processor.temporal_patch_size)
    resized_height, resized_width = smart_resize(height, width, factor, min_pixels, max_pixels)
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


def _video_call_arguments(lm: LoadedModel, video) -> dict[str, Any]:
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


def build_inputs(lm: LoadedModel, video, question: str, system: str | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for one chat turn: optional system message, the user's video (already sampled frames, None for a
    text-only prompt) then question, and the generation prompt.

    Keys: input_ids, attention_mask and, with a video, pixel_values_videos plus the family's own (Qwen:
    video_grid_thw and mm_token_type_ids, Qwen2.5-VL: second_per_grid_ts from video.sample_fps; LLaVA-OV: none).
    """
    messages = chat_messages(lm.family, question, system, video is not None)
    text = lm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if video is None:
        batch = lm.processor(text=[text], return_tensors="pt")
    else:
        _check_frames(video.frames)
        arguments = _video_call_arguments(lm, video)
        batch = lm.processor(text=[text], videos=[video.frames], return_tensors="pt", **arguments)
    return _to_model(batch, lm.device, lm.dtype)
