"""The StD decoding engine: `Engine` (one model's decoding across runs), `Decoder` (the steps), the session loop
(`run_window`), the gamma policy and its cost memory, and the GPU fast path (fused forward, kernels, graphs).
docs/architecture.md shows how they fit together."""

from stdcli.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "options": ("AUTO", "DEFAULT_GAMMA", "DEFAULT_K", "MAX_AUTO_GAMMA", "DecodeOptions", "EngineConfig"),
    "stats": ("DecodeStats", "gamma_counts"),
    "policy": ("GammaPolicy", "expected_tokens"),
    "costs": ("CostMemory",),
    "decoder": ("Decoder", "SharedPrefix", "Slot"),
    "session": ("Engine", "Generation", "Request", "cache_capacity", "generate", "policy_cycle", "run_window"),
})
