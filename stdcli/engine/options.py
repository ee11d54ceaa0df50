"""What one decoding run asks for (`DecodeOptions`) and how the engine runs it (`EngineConfig`).

Importing this module costs nothing (no torch): the command line takes its defaults from here.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"
DEFAULT_K = 512  # visual entries kept per layer and KV head
DEFAULT_GAMMA: int | str = AUTO
MAX_AUTO_GAMMA = 8  # the largest gamma auto considers: beyond it E(g) grows little at any realistic acceptance
# The longest fixed draft: a verify of MAX_GAMMA + 1 tokens at batch 1 still fits the batch-invariant kernels'
# 16-row tile, and at any acceptance below 0.95 a longer draft adds less than 0.05 tokens per cycle.
MAX_GAMMA = 15


# What a draft step reads: the sparse view with the model's own weights, or with their int8 / int4 copy (quant.py).
SPARSE_DRAFT, INT8_DRAFT, INT4_DRAFT = "sparse", "int8", "int4"
DRAFT_KINDS = (SPARSE_DRAFT, INT8_DRAFT, INT4_DRAFT)
# What --draft auto chooses among on a CUDA GPU. int8 is left out: it costs twice int4's memory (half the weights'
# bytes against a quarter) for a draft that reads twice as much; ask for it by name. Elsewhere auto is the sparse
# draft alone: without the dequantizing kernels a quantized draft step costs more than a dense one.
AUTO_DRAFTS = (INT4_DRAFT, SPARSE_DRAFT)


def check_gamma(gamma: int | str) -> None:
    if not (gamma == AUTO or (isinstance(gamma, int) and 0 <= gamma <= MAX_GAMMA)):
        raise ValueError(f"gamma must be a count from 0 to {MAX_GAMMA} or {AUTO!r}, got {gamma!r}")


@dataclass(frozen=True)
class DecodeOptions:
    """Per-request decoding settings. gamma: drafts per cycle, 0 = dense decoding, "auto" = chosen every cycle."""

    max_new_tokens: int = 256
    k: int = DEFAULT_K
    gamma: int | str = DEFAULT_GAMMA
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    # StD sequences start with this many plain dense steps: their measured cost is the baseline of `speedup_est`.
    calibration_steps: int = 2
    draft: str = AUTO  # a kind of DRAFT_KINDS, or "auto": chosen every cycle, as gamma auto chooses gamma

    def __post_init__(self) -> None:
        check_gamma(self.gamma)
        if self.draft != AUTO and self.draft not in DRAFT_KINDS:
            raise ValueError(f"draft must be one of {', '.join(DRAFT_KINDS)} or {AUTO!r}, got {self.draft!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def max_gamma(self) -> int:
        """The most drafts a cycle can make: what caches must leave room for."""
        return MAX_AUTO_GAMMA if self.gamma == AUTO else int(self.gamma)

    @property
    def drafting(self) -> bool:
        return self.max_gamma > 0

    @property
    def mode(self) -> str:
        return "dense" if self.gamma == 0 else "std"


@dataclass(frozen=True)
class EngineConfig:
    """How the engine computes a step; the same tokens whatever is chosen here."""

    cuda_graphs: bool = True  # on a CUDA device: each step shape is captured once and replayed
    # Experimental, on a CUDA device: torch.compile each step shape before capturing it. Measured on transformers'
    # forward it halved the kernels of a step but compiled the cache writes to whole-buffer copies, 2x slower
    # (docs/benchmarks.md); not measured with the fused forward, which already has few kernels
    compile: bool = False
    # Qwen2-family language models and Qwen3-VL: decoding steps run our fused forward (fused.py); False: transformers'
    # forward
    fused: bool = True
