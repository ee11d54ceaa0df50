"""Loading a model for inference: device and dtype, the checkpoint's processor and weights, and its engine.

Nothing here touches the network when the model is already on disk: hub ids are loaded from their snapshot in the
local Hugging Face cache; one that is not there is downloaded when the hub can be reached, where HF_HUB_OFFLINE
does not forbid it, and an unreachable hub is detected in seconds, not retried.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..engine.costs import CostMemory
from ..engine.options import EngineConfig
from ..engine.session import Engine
from ..engine.tensor_parallel import TensorParallel, TensorParallelError, check_shape, shard_language_model
from ..errors import one_line
from .adapter import ModelAdapter
from .registry import (
    DEFAULT_MODEL,
    MODEL_CLASS_NAMES,
    ModelLoadError,
    Resolved,
    resolve_hub,
    resolve_model,
)


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
    engine: Engine  # decodes this model: its fused weights, kept decoder and cost memory


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
    except Exception as error:  # any hub failure (unknown id, gated, network) becomes one line
        raise ModelLoadError(f"could not download {repo_id}: {one_line(error, 300)}") from None
    return resolve_hub(resolved.name, resolved.kind, repo_id, resolved.family)


def _from_pretrained(cls, folder: Path, device: torch.device, **kwargs: Any):
    # device_map needs accelerate; without it the weights are loaded on the CPU and moved.
    if importlib.util.find_spec("accelerate") is not None:
        return cls.from_pretrained(folder, device_map=str(device), **kwargs)
    return cls.from_pretrained(folder, **kwargs).to(device)


def load_model(
    name: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    *,
    config: EngineConfig | None = None,
    cost_memory: CostMemory | None = None,
    tensor_parallel: TensorParallel | None = None,
) -> LoadedModel:
    """Load a model (alias, folder or hub id) for inference, in eval mode, with its decoding engine; every failure
    is a ModelLoadError. `cost_memory`: where gamma auto remembers step costs (default: in this process only;
    `CostMemory.load(costs.default_path())` is the command line's file). `tensor_parallel`: this rank's group
    (engine/tensor_parallel.py, on its device): the ranks load the checkpoint one after another on the host, each
    keeping its part of the language model, which then goes to its device."""
    torch_device = pick_device(device) if tensor_parallel is None else tensor_parallel.device
    torch_dtype = pick_dtype(dtype, torch_device)
    resolved = resolve_model(name)
    if not resolved.available and resolved.kind in ("alias", "hub") and not Path(resolved.location).is_dir():
        resolved = _download(resolved)
    if not resolved.available or resolved.family is None:
        raise ModelLoadError(f"cannot load {name}: {resolved.detail}")
    folder = Path(resolved.location)
    import transformers

    model_class = getattr(transformers, MODEL_CLASS_NAMES[resolved.family])
    safetensors = any(folder.glob("*.safetensors"))
    try:
        processor = transformers.AutoProcessor.from_pretrained(
            folder, trust_remote_code=trust_remote_code, local_files_only=True
        )
        settings = dict(dtype=torch_dtype, use_safetensors=True if safetensors else None,
                        trust_remote_code=trust_remote_code, local_files_only=True)
        if tensor_parallel is None:
            model = _from_pretrained(model_class, folder, torch_device, **settings)
        else:
            model_config = model_class.config_class.from_pretrained(
                folder, trust_remote_code=trust_remote_code, local_files_only=True)
            check_shape(model_config.get_text_config(), tensor_parallel.size)  # before any weight is read
            model = tensor_parallel.in_turn(
                lambda: _load_shard(model_class, folder, tensor_parallel, config=model_config, **settings))
    except TensorParallelError as error:
        raise ModelLoadError(str(error)) from None
    except Exception as error:  # a broken checkpoint, OOM, ...: one line for the user
        reason = f"{type(error).__name__}: {one_line(error, 300)}"
        raise ModelLoadError(f"cannot load {name} from {folder}: {reason}") from None
    model.eval()
    tokenizer = processor.tokenizer
    adapter = ModelAdapter.of(model, tokenizer, tensor_parallel.size if tensor_parallel is not None else 1)
    return LoadedModel(
        name=name,
        family=resolved.family,
        location=str(folder),
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        eos_token_ids=adapter.eos_ids,
        visual_token_ids=adapter.visual_ids,
        engine=Engine(adapter, config, cost_memory, tensor_parallel),
    )


def _load_shard(cls, folder: Path, parallel: TensorParallel, **kwargs: Any):
    """This rank's part of the model (tensor_parallel.shard_language_model) on its device: read whole on the host,
    since from_pretrained cannot read a part of a weight; the rest is freed before the next rank reads."""
    model = cls.from_pretrained(folder, **kwargs)
    shard_language_model(model, parallel)
    return model.to(parallel.device)
