"""Which models stdcli knows and where each name points: the registry of aliases, checkpoint folders, and the
local Hugging Face cache. Importing this module costs nothing (no torch, no transformers): `stdcli models` runs on
it alone.

A model is named by an alias of the registry, a local folder, or a Hugging Face id. Nothing here touches the network:
hub ids are looked up in the local Hugging Face cache (loading.py downloads what is missing, when it may).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"

# config.json model_type -> family (the families of build.py, which this module does not import: transformers takes
# seconds to import, and `stdcli models` needs none of it). Model classes are looked up by name when loading.
FAMILY_OF_MODEL_TYPE = {
    "qwen2_vl": "qwen2-vl",
    "qwen2_5_vl": "qwen2.5-vl",
    "llava_onevision": "llava-ov",
    "qwen3_vl": "qwen3-vl",
    "qwen3_5": "qwen3.5",
}
MODEL_CLASS_NAMES = {
    "qwen2-vl": "Qwen2VLForConditionalGeneration",
    "qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
    "llava-ov": "LlavaOnevisionForConditionalGeneration",
    "qwen3-vl": "Qwen3VLForConditionalGeneration",
    "qwen3.5": "Qwen3_5ForConditionalGeneration",
}
SUPPORTED = (
    "Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, Qwen3-VL and Qwen3.5 (" + ", ".join(MODEL_CLASS_NAMES.values()) + ")"
)
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
    scale: str | None = None  # the shape `bench --random-init` builds for it (build.SHAPES), None: none


REGISTRY: dict[str, ModelSpec] = {
    spec.alias: spec
    for spec in (
        ModelSpec("builtin", None, "qwen2-vl", "small model shipped with stdcli, trained on generated shape videos"),
        ModelSpec("qwen2-vl", "Qwen/Qwen2-VL-7B-Instruct", "qwen2-vl", "Qwen2-VL 7B Instruct", "7b"),
        ModelSpec("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "qwen2-vl", "Qwen2-VL 2B Instruct", "2b"),
        ModelSpec("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl", "Qwen2.5-VL 7B Instruct", "7b"),
        ModelSpec(
            "llava-ov", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava-ov", "LLaVA-OneVision Qwen2 7B (ov)", "7b"
        ),
        ModelSpec("qwen3-vl", "Qwen/Qwen3-VL-8B-Instruct", "qwen3-vl", "Qwen3-VL 8B Instruct", "8b"),
        ModelSpec("qwen3-vl-2b", "Qwen/Qwen3-VL-2B-Instruct", "qwen3-vl", "Qwen3-VL 2B Instruct", "2b"),
        ModelSpec("qwen3-vl-4b", "Qwen/Qwen3-VL-4B-Instruct", "qwen3-vl", "Qwen3-VL 4B Instruct", "4b"),
        ModelSpec("qwen3-vl-32b", "Qwen/Qwen3-VL-32B-Instruct", "qwen3-vl", "Qwen3-VL 32B Instruct", "32b"),
        # Qwen3.5's dense checkpoints are natively multimodal (no -VL line) and post-trained under the bare name; the
        # alias is the 9B, the largest that fits a 24 GB GPU in bfloat16 (its KV cache is a quarter of a dense model's)
        ModelSpec("qwen3.5", "Qwen/Qwen3.5-9B", "qwen3.5", "Qwen3.5 9B (hybrid: linear + full attention)", "9b"),
        ModelSpec("qwen3.5-0.8b", "Qwen/Qwen3.5-0.8B", "qwen3.5", "Qwen3.5 0.8B", "0.8b"),
        ModelSpec("qwen3.5-2b", "Qwen/Qwen3.5-2B", "qwen3.5", "Qwen3.5 2B", "2b"),
        ModelSpec("qwen3.5-4b", "Qwen/Qwen3.5-4B", "qwen3.5", "Qwen3.5 4B", "4b"),
        ModelSpec("qwen3.5-27b", "Qwen/Qwen3.5-27B", "qwen3.5", "Qwen3.5 27B", "27b"),
    )
}


class ModelLoadError(Exception):
    """A model that cannot be loaded; str() is one line that says what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


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


def resolve_hub(name: str, kind: str, repo_id: str, family: str | None) -> Resolved:
    """A hub id resolved through the local Hugging Face cache."""
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
        return resolve_hub(name, "alias", spec.repo_id, spec.family)
    folder = Path(name).expanduser()
    if folder.is_dir():
        return _resolve_folder(name, "path", folder, None, "local folder")
    if folder.exists():
        return Resolved(name, "path", str(folder), None, False, f"{folder} is a file, not a model folder")
    if _looks_like_path(name):
        return Resolved(name, "path", str(folder), None, False, f"no such folder: {folder}")
    resolved = resolve_hub(name, "hub", name, None)
    if not resolved.available and "/" not in name:
        resolved.detail = (
            f"{name!r} is not an alias ({', '.join(REGISTRY)}), not a folder, and not in the local Hugging Face cache"
        )
    return resolved


def list_models() -> list[Resolved]:
    """Every alias of the registry, where it resolves and whether it is available offline."""
    return [resolve_model(alias) for alias in REGISTRY]


# Language-model shapes the built-in model can be inflated into (inflate.py): Qwen2-VL-7B-Instruct's (config.json),
# and a reduced one for the CPU tests.
INFLATE_SHAPES: dict[str, dict[str, int]] = {
    "7b": {"hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4, "num_hidden_layers": 28,
           "intermediate_size": 18944, "vocab_size": 152064},
    "test": {"hidden_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 10,
             "intermediate_size": 1536, "vocab_size": 1000},
}
