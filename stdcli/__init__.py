"""stdcli: answer questions about videos with a Video-LLM, decoded losslessly faster with Sparse-to-Dense.

    from stdcli import load_model, answer_video, AskOptions
    lm = load_model("path/to/checkpoint")
    record = answer_video(lm, "samples/short_1.mp4", AskOptions(question="What happens?"))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Imported on first use: torch and transformers take seconds, and `import stdcli.world` needs neither.
_LAZY = {
    "AskOptions": "ask",
    "FrameOptions": "ask",
    "answer_video": "ask",
    "answer_videos": "batch",
    "load_model": "models",
    "list_models": "models",
    "sample_frames": "video",
    "DecodeOptions": "std",
    "generate": "std",
    "release_decoder": "std",
    "GammaPolicy": "policy",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
