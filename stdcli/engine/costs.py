"""The step costs gamma auto remembers between sequences and between runs (`CostMemory`).

A cost memory maps a key (model, device, dtype, batch size, context size as a power of two) to what the last
sequence under that key measured: the next one starts from it instead of trying a cycle first. It lives in the
process and, when given a path, in a small JSON file that `load` reads and `save` writes, explicitly: nothing here
is global, and nothing is written at exit behind the caller's back. The command line uses the file below;
library users pass a memory (or get a fresh one, in memory only).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from .policy import GammaPolicy

FILE_NAME = "step-costs.json"
# While running, the file is rewritten at most this often (`save_if_due`): a write per answer cost short answers
# ~10% of their decode time.
SAVE_EVERY_S = 30.0
UNNAMED = "unnamed-"  # keys of models without a name (built in memory): never written to a file


def default_path() -> Path:
    """$STDCLI_CACHE_DIR/step-costs.json, else $XDG_CACHE_HOME/stdcli/..., else ~/.cache/stdcli/..."""
    root = os.environ.get("STDCLI_CACHE_DIR")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stdcli")
    return Path(root) / FILE_NAME


def model_label(name_or_path: str | None, identity: int) -> str:
    """What keys name a model by: its name or path; a model without one (built in memory) is named by its
    identity in this process, and its costs are never written to a file."""
    return name_or_path or f"{UNNAMED}{identity}"


def cost_key(model: str, device: str, dtype: str, batch: int, prompt_tokens: int) -> str:
    """Step costs depend on the model (model_label), the device it runs on, the dtype, the batch and (through the
    KV cache) the context: powers of two of it."""
    bucket = math.ceil(math.log2(max(prompt_tokens, 1)))
    return f"{model}|{device}|{dtype}|batch={batch}|context<=2^{bucket}"


class CostMemory:
    """key -> the policy a finished sequence left. `path` None: in memory only."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.entries: dict[str, GammaPolicy] = {}
        self.unsaved = False
        self.saved_at: float | None = None

    @classmethod
    def load(cls, path: Path) -> CostMemory:
        """The memory kept in `path`; empty if there is no file yet or it is damaged (costs are then measured)."""
        memory = cls(path)
        try:
            saved = json.loads(path.read_text())
            memory.entries = {key: GammaPolicy.from_saved(values) for key, values in saved.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            memory.entries = {}
        return memory

    def get(self, key: str) -> GammaPolicy | None:
        return self.entries.get(key)

    def remember(self, key: str, policy: GammaPolicy) -> None:
        if policy.worth_remembering:
            self.entries[key] = policy.copy()
            self.unsaved = True

    def save(self) -> None:
        """Write what is remembered, atomically; a read-only home only costs the next run its trial cycle."""
        self.saved_at = time.monotonic()
        if self.path is None or not self.unsaved:
            return
        named = {key: p.saved_state() for key, p in self.entries.items() if not key.startswith(UNNAMED)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(named, indent=1))
            partial.replace(self.path)
        except OSError:
            pass
        self.unsaved = False

    def save_if_due(self) -> None:
        """`save` if nothing was written in the last SAVE_EVERY_S seconds (call it as work goes on)."""
        if self.saved_at is None or time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            self.save()
