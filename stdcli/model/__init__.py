"""Models: the registry of names (registry.py, no torch), loading (loading.py), what the engine needs to know of a
family (adapter.py), prompts and processor inputs (prompts.py), and checkpoints built from scratch (build.py)."""

from stdcli.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "registry": ("DEFAULT_MODEL", "REGISTRY", "ModelLoadError", "list_models", "resolve_model"),
    "loading": ("LoadedModel", "load_model", "pick_device", "pick_dtype"),
    "adapter": ("ModelAdapter",),
    "prompts": ("build_inputs", "frame_defaults"),
})
