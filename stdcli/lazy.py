"""Packages that export names from their modules without importing them until first use: `stdcli --help` and
`stdcli models` must not wait seconds for torch and transformers to import."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]) -> tuple[list[str], Callable[[str], Any]]:
    """(__all__, a module-level __getattr__) for `package`, exporting the names of each submodule in `modules`
    (submodule -> names), each imported on first use."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(f".{where[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return list(where), __getattr__
