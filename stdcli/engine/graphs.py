"""CUDA graphs for the engine's decoding steps: one capture per step shape, replayed after.

A decoding step of a 7B model is a few hundred small kernels; launched one by one from Python, the launches cost
several times what the GPU needs to read the weights. Captured once in a CUDA graph, a step is one launch. This
needs every step of a kind to have the same shapes and to keep its varying inputs (tokens, positions, cached
lengths) in device tensors: the engine reads whole cache buffers and masks lengths in attention for that reason.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import Any

import torch

_side_streams: dict[int | None, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    if device.index not in _side_streams:
        _side_streams[device.index] = torch.cuda.Stream(device)
    return _side_streams[device.index]


class CapturedStep:
    """`fn(*tensors) -> tensor` over inputs of fixed shapes: run for real and captured on the first call, replayed
    on the later ones (inputs copied into the captured ones; the returned tensor is overwritten by the next call).

    `fn` must be deterministic and idempotent for the same inputs (a decoding step writes the same cache entries
    again): the first call runs it once for its result, and the capture records it without running it.
    If the capture fails (an operation a graph cannot hold, in some transformers version), `failed` says why and
    the caller goes on without graphs.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], pool: Any):
        self.fn = fn
        self.pool = pool
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor] = []
        self.output: torch.Tensor | None = None
        self.failed: str | None = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.graph is not None:
            for static, value in zip(self.inputs, inputs, strict=True):
                static.copy_(value)
            self.graph.replay()
            assert self.output is not None  # set by the capture
            return self.output
        self.inputs = [x.clone() for x in inputs]
        device = self.inputs[0].device
        stream = _side_stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # the real step; it also warms up kernels (Triton compiles) before capture
            result = self.fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # The garbage collector must not run inside a capture: destroying an unreachable graph (an old decoder's)
        # is an operation a capturing stream forbids, and it would invalidate this capture.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                self.output = self.fn(*self.inputs)
        except Exception as error:  # reported by the caller, which falls back to plain launches
            self.failed = f"{type(error).__name__}: {error}".splitlines()[0]
            return result
        finally:
            if collecting:
                gc.enable()
        self.graph = graph
        return result


class StepGraphs:
    """One CapturedStep per step shape (a key such as ("dense", width)), sharing one memory pool. If a capture
    fails, `failure` says why and every later step runs eagerly."""

    def __init__(self) -> None:
        self.steps: dict[tuple[str, str, int], CapturedStep] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.failure: str | None = None

    def run(self, key: tuple[str, str, int], fn: Callable[..., torch.Tensor], *inputs: torch.Tensor
            ) -> tuple[torch.Tensor, bool]:
        """fn(*inputs) replayed from the graph of `key`, or run and captured on its first call; also whether this
        call captured (its time is not a step's cost)."""
        if self.failure is not None:
            return fn(*inputs), False
        step = self.steps.get(key)
        captured = step is None
        if step is None:
            step = self.steps[key] = CapturedStep(fn, self.pool)
        result = step(*inputs)
        if step.failed:  # this forward cannot be captured: plain launches from now on
            self.failure, self.steps = step.failed, {}
            warnings.warn(f"decoding without CUDA graphs (slower): {step.failed}", RuntimeWarning, stacklevel=3)
        return result, captured
