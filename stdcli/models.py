"""Which models stdcli knows, where they are, how to load them, and how a video and a question become model inputs.

A model is named by an alias of the registry, a local folder, or a Hugging Face id. Nothing here touches the network
when the model is already on disk: hub ids are looked up in the local Hugging Face cache first and loaded from the
cached snapshot folder; HF_HUB_OFFLINE is honoured, and an unreachable hub is detected in seconds, not retried.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

DEFAULT_MODEL = "builtin"
BUILTIN_DIR = Path(__file__).parent / "builtin"

# config.json model_type -> family (the families of build.py, which this module does not import: transformers takes
# seconds to import, and `stdcli models` needs none of it). Model classes are looked up by name when loading.
FAMILY_OF_MODEL_TYPE = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "llava_onevision": "llava-ov"}
MODEL_CLASS_NAMES = {
    "qwen2-vl": "Qwen2VLForConditionalGeneration",
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "llava-ov": "LlavaOnevisionForConditionalGeneration",
}
SUPPORTED = "Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision (" + ", ".join(MODEL_CLASS_NAMES.values()) + ")"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    repo_id: str | None  # None: ships inside the package
    family: str
    description: str


REGISTRY: dict[str, ModelSpec] = {
    spec.alias: spec
    for spec in (
        ModelSpec("builtin", None, "qwen2-vl", "small model shipped with stdcli, trained on generated shape videos"),
        ModelSpec("qwen2-vl", "Qwen/Qwen2-VL-7B-Instruct", "qwen2-vl", "Qwen2-VL 7B Instruct"),
        ModelSpec("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2-vl", "Qwen2-VL 2B Instruct"),
        ModelSpec("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl", "Qwen2.5-VL 7B Instruct"),
        ModelSpec("llava-ov", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava-ov", "LLaVA-OneVision Qwen2 7B (ov)"),
    )
}


class ModelLoadError(Exception):
    """A model that cannot be loaded; str() is one line that says what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --- resolving a name -----------------------------------------------------------------------------------------------


@dataclass
class Resolved:
    name: str  # as given
    kind: str  # "builtin" | "alias" | "path" | "hub"
    location: str  # folder it loads from, or the hub id while it is not on disk
    family: str | None
    available: bool  # loadable without the network
    detail: str


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _missing_weights(folder: Path) -> str | None:
    """What is missing for the weights in `folder` to be complete, or None."""
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        return "no weights (model.safetensors or pytorch_model.bin)"
    index = next((name for name in present if name.endswith(".index.json")), None)
    if index is None:
        return None
    try:
        shards = set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        return f"an unreadable {index}"
    missing = sorted(shard for shard in shards if not (folder / shard).is_file())
    return f"missing weight shards ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})" if missing else None


def inspect_folder(folder: Path) -> tuple[str | None, str | None]:
    """(family, problem) of a checkpoint folder: problem is None when it looks loadable."""
    if not folder.is_dir():
        return None, f"{folder} is not a folder"
    config = _read_config(folder)
    if config is None:
        which = "an unreadable" if (folder / "config.json").is_file() else "no"
        return None, f"{folder} has {which} config.json, so it is not a model checkpoint"
    model_type = config.get("model_type")
    family = FAMILY_OF_MODEL_TYPE.get(model_type)
    if family is None:
        architecture = ", ".join(config.get("architectures") or []) or "unknown"
        return None, f"unsupported architecture {architecture} (model_type {model_type!r}): stdcli supports {SUPPORTED}"
    missing = _missing_weights(folder)
    return family, (f"{folder} has {missing}" if missing else None)


def cached_snapshot(repo_id: str) -> Path | None:
    """The local Hugging Face cache folder of `repo_id` when its config.json is there (no network), else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id (HFValidationError)
        return None
    return Path(config).parent if isinstance(config, str) else None


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else with a separator, or starting like a path, is a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _resolve_folder(name: str, kind: str, folder: Path, family: str | None, found: str) -> Resolved:
    folder_family, problem = inspect_folder(folder)
    if problem is None:
        return Resolved(name, kind, str(folder), folder_family, True, found)
    return Resolved(name, kind, str(folder), folder_family or family, False, problem)


def _not_downloaded(repo_id: str) -> str:
    return f"not in the local Hugging Face cache (`hf download {repo_id}`)"


def _resolve_hub(name: str, kind: str, repo_id: str, family: str | None) -> Resolved:
    snapshot = cached_snapshot(repo_id)
    if snapshot is None:
        return Resolved(name, kind, repo_id, family, False, _not_downloaded(repo_id))
    return _resolve_folder(name, kind, snapshot, family, f"{repo_id}, in the local Hugging Face cache")


def resolve_model(name: str) -> Resolved:
    """Where `name` (alias, folder or hub id) points and whether it can be loaded offline. Never raises."""
    if name == "builtin":
        resolved = _resolve_folder(name, "builtin", BUILTIN_DIR, "qwen2-vl", "ships with stdcli")
        if not resolved.available:
            resolved.detail = (
                "the built-in model's weights are not in this install yet: pass --model with a real checkpoint "
                "(an alias such as qwen2-vl-2b, a Hugging Face id, or a folder)"
            )
        return resolved
    if name in REGISTRY:
        spec = REGISTRY[name]
        return _resolve_hub(name, "alias", spec.repo_id, spec.family)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _resolve_folder(name, "path", folder, None, "local folder")
    if folder.exists():
        return Resolved(name, "path", str(folder), None, False, f"{folder} is a file, not a model folder")
    if _looks_like_path(name):
        return Resolved(name, "path", str(folder), None, False, f"no such folder: {folder}")
    resolved = _resolve_hub(name, "hub", name, None)
    if not resolved.available and "/" not in name:
        resolved.detail = (
            f"{name!r} is not an alias ({', '.join(REGISTRY)}), not a folder, and not in the local Hugging Face cache"
        )
    return resolved


def list_models() -> list[Resolved]:
    """Every alias of the registry, where it resolves and whether it is available offline."""
    return [resolve_model(alias) for alias in REGISTRY]


# --- loading --------------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    name: str
    family: str
    location: str
    model: Any  # a transformers PreTrainedModel, eval mode
    processor: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    eos_token_ids: tuple[int, ...]
    visual_token_ids: tuple[int, ...]  # image and video placeholder ids in input_ids


DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def pick_device(spec: str) -> torch.device:
    """"auto" = the first CUDA GPU if there is one, else the CPU; "cpu", "cuda", "cuda:N" (and "mps") explicitly."""
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"--device {spec} asked for, but no CUDA GPU is usable here: use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"--device {spec} asked for, but MPS is not available here: use --device cpu or auto")
    elif device.type != "cpu":
        raise ModelLoadError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


def pick_dtype(spec: str, device: torch.device) -> torch.dtype:
    """"auto" = bfloat16 on CUDA (float16 where bfloat16 is not supported), float32 elsewhere."""
    text = spec.strip().lower()
    if text == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if text not in DTYPE_NAMES:
        raise ModelLoadError(f"unknown dtype {spec!r}: use auto, float32, bfloat16 or float16")
    return DTYPE_NAMES[text]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection within `timeout` seconds."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def _hub_offline() -> bool:
    return any(
        os.environ.get(variable, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _download(resolved: Resolved) -> Resolved:
    """Fetch a hub model that is not cached yet, when the hub can be reached; the cached folder resolved again."""
    repo_id = resolved.location
    unreachable = (
        f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached: download it where there is "
        f"network (`hf download {repo_id}`) or pass --model /path/to/folder"
    )
    if _hub_offline() or not hub_reachable():
        raise ModelLoadError(unreachable if "/" in repo_id else resolved.detail)
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, ignore_patterns=["*.bin", "*.pt", "*.pth", "*.gguf", "*.onnx", "*.h5", "original/*"])
    except Exception as error:  # noqa: BLE001 - any hub failure (unknown id, gated, network) becomes one line
        raise ModelLoadError(f"could not download {repo_id}: {_one_line(error)}") from None
    return _resolve_hub(resolved.name, resolved.kind, repo_id, resolved.family)


def _from_pretrained(cls, folder: Path, device: torch.device, **kwargs: Any):
    # device_map needs accelerate; without it the weights are loaded on the CPU and moved.
    if importlib.util.find_spec("accelerate") is not None:
        return cls.from_pretrained(folder, device_map=str(device), **kwargs)
    return cls.from_pretrained(folder, **kwargs).to(device)


def load_model(
    name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> LoadedModel:
    """Load a model (alias, folder or hub id) for inference, in eval mode; every failure is a ModelLoadError."""
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    resolved = resolve_model(name)
    if not resolved.available and resolved.kind in ("alias", "hub") and not Path(resolved.location).is_dir():
        resolved = _download(resolved)
    if not resolved.available:
        raise ModelLoadError(f"cannot load {name}: {resolved.detail}")
    folder = Path(resolved.location)
    import transformers

    model_class = getattr(transformers, MODEL_CLASS_NAMES[resolved.family])
    safetensors = any(folder.glob("*.safetensors"))
    try:
        processor = transformers.AutoProcessor.from_pretrained(
            folder, trust_remote_code=trust_remote_code, local_files_only=True
        )
        model = _from_pretrained(
            model_class,
            folder,
            torch_device,
            dtype=torch_dtype,
            use_safetensors=True if safetensors else None,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except Exception as error:  # noqa: BLE001 - a broken checkpoint, OOM, ...: one line for the user
        raise ModelLoadError(f"cannot load {name} from {folder}: {type(error).__name__}: {_one_line(error)}") from None
    model.eval()
    from .std import eos_token_ids, visual_token_ids

    tokenizer = processor.tokenizer
    return LoadedModel(
        name=name,
        family=resolved.family,
        location=str(folder),
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        eos_token_ids=eos_token_ids(model, tokenizer),
        visual_token_ids=visual_token_ids(model),
    )


# --- frames and prompts ---------------------------------------------------------------------------------------------


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

