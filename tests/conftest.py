"""Shared test setup: no network at all, tiny checkpoints of each model family, small random videos."""

from __future__ import annotations

import os
import tempfile

# Before anything imports huggingface_hub or transformers: the tests must never reach (or wait for) the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# gamma auto remembers step costs on disk: never in the user's home during tests (and each test gets its own
# folder, below, so that what one test's runs remembered cannot change another's)
os.environ["STDCLI_CACHE_DIR"] = tempfile.mkdtemp(prefix="stdcli-test-cache-")

import torch

# Without a GPU, Triton's interpreter runs the GPU kernels on the CPU, so their tests run in CI too (the engine
# itself only launches them on CUDA). It must be set before stdcli.kernels is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest


@dataclass
class SmallVideo:
    """Duck-typed stand-in for stdcli.video.SampledVideo: frames already sampled at `sample_fps` from a source."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps: list[float]
    indices: list[int]
    source_fps: float
    duration: float
    step: int = field(default=1, repr=False)  # source frames between two sampled frames

    @property
    def sample_fps(self) -> float:
        return self.source_fps / self.step


def small_video(num_frames: int = 6, height: int = 56, width: int = 56, fps: float = 2.0, seed: int = 0) -> SmallVideo:
    """Random frames as if sampled at `fps` from a 30 fps source (56x56 frames: a few visual tokens each)."""
    source_fps = 30.0
    step = max(1, round(source_fps / fps))
    indices = [i * step for i in range(num_frames)]
    frames = np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    return SmallVideo(
        frames=frames,
        timestamps=[i / source_fps for i in indices],
        indices=indices,
        source_fps=source_fps,
        duration=(indices[-1] + step) / source_fps,
        step=step,
    )


@pytest.fixture(autouse=True)
def own_cost_memory(tmp_path_factory, monkeypatch) -> Path:
    """A cost memory file of this test's own: the command line's runs within a test share it, as a user's runs
    do, but no test sees what another remembered."""
    folder = tmp_path_factory.mktemp("step-costs")
    monkeypatch.setenv("STDCLI_CACHE_DIR", str(folder))
    return folder


@contextmanager
def single_thread() -> Iterator[None]:
    """PyTorch on one CPU thread: a tiny model's ops are so small that splitting them costs more than they do,
    several times more on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """The test runs on one CPU thread (single_thread)."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def test_device() -> str:
    """Where the exactness tests decode: the CPU, or STDCLI_TEST_DEVICE=cuda (CUDA graphs, the decode kernel)."""
    return os.environ.get("STDCLI_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def make_video() -> Callable[..., SmallVideo]:
    """small_video(num_frames=6, height=56, width=56, fps=2.0, seed=0)."""
    return small_video


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Callable[[str], Path]:
    """tiny_checkpoint(family) -> folder of a tiny random checkpoint of that family, built once per session."""
    from stdcli.model.build import save_tiny_checkpoint

    built: dict[str, Path] = {}

    def path_of(family: str) -> Path:
        if family not in built:
            built[family] = save_tiny_checkpoint(family, tmp_path_factory.mktemp(family.replace(".", "_")))
        return built[family]

    return path_of
