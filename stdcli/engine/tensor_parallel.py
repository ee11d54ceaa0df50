"""Tensor parallelism: one model's language model split over the ranks of a torchrun launch.

The split is the usual one (Megatron-LM's), over the N ranks of one process group:

- q/k/v projections by output rows, whole heads: rank r holds KV heads [r Hkv/N, (r+1) Hkv/N) and the query heads
  of their GQA groups; o_proj by the matching input columns;
- gate/up projections by output rows (intermediate features), down_proj by the matching input columns;
- the partial outputs of o_proj and down_proj are summed over the ranks (one reduction after each);
- the KV cache holds only the rank's own KV heads, so StD's top-K stays local: visual tokens are ranked per layer
  and KV head, from that head's keys and its group's queries, which the rank holds whole;
- replicated on every rank: the embeddings, the norms, the LM head (every rank computes the same logits and picks
  the same tokens, exactly as one rank would: no gather) and the vision tower.

Transformers' forward (every prefill, and decoding steps that do not run the fused forward) gets the sum as a
forward hook on o_proj and down_proj: an all-reduce. The fused decoding steps (fused.py) sum with `ordered_sum`
instead: every rank's partial output gathered, then added in rank order, so that a row's sum does not depend on
how many rows the step has (an all-reduce picks its algorithm, and so its order of additions, by message size:
a verify's rows would be summed in another order than a dense step's, which in 16-bit can flip a near-tie).
Both collectives run on the current stream with no host synchronization, which is what a CUDA graph can hold.

The ranks decode in lock step: each runs the same steps on the same inputs. What a rank decides from its own
measurements (gamma auto's choices, from its own step times; a batch that fits its own free memory) is agreed on
over a host-side group (`SharedPolicy`, `agreed_min`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .policy import Cycle, GammaPolicy

# What torchrun sets in every process it starts.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class TensorParallelError(ValueError):
    """A request tensor parallelism cannot serve (a usage error: one line for the user)."""


@dataclass(frozen=True)
class TensorParallel:
    """This process's place in a tensor-parallel group: `group` carries the model's collectives (NCCL between GPUs,
    gloo on CPUs), `control` the host-side agreements (gloo)."""

    rank: int
    size: int
    device: torch.device
    group: Any  # a torch.distributed ProcessGroup
    control: Any

    @property
    def leader(self) -> bool:
        """The rank that speaks for the group: it prints, writes and remembers costs; the others only compute."""
        return self.rank == 0

    def all_reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """The sum of every rank's `partial`, in place (transformers' forward)."""
        dist.all_reduce(partial, group=self.group)
        return partial

    def ordered_sum(self, partial: torch.Tensor) -> torch.Tensor:
        """The sum of every rank's `partial` [rows, width], added in rank order in float32: a row's sum is the same
        whatever rows are reduced with it (the fused decoding steps)."""
        gathered = partial.new_empty((self.size * partial.shape[0], *partial.shape[1:]))  # ranks one after another
        dist.all_gather_into_tensor(gathered, partial.contiguous(), group=self.group)
        parts = gathered.view(self.size, *partial.shape)
        total = parts[0].float()
        for part in parts[1:]:
            total = total + part
        return total.to(partial.dtype)

    def agree(self, values: list[int]) -> list[int]:
        """The leader's values, on every rank."""
        tensor = torch.tensor(values, dtype=torch.long)
        dist.broadcast(tensor, src=0, group=self.control)
        return [int(v) for v in tensor.tolist()]

    def agreed_min(self, value: int) -> int:
        """The smallest of every rank's `value`."""
        tensor = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=self.control)
        return int(tensor.item())

    def in_turn(self, work: Callable[[], Any]) -> Any:
        """`work()` on one rank after another (rank order), each waiting for the one before: loading a checkpoint
        this way needs host memory for one whole model at a time, not one per rank."""
        result = None
        for rank in range(self.size):
            if rank == self.rank:
                result = work()
            dist.barrier(group=self.control)
        return result


def launched_size() -> int | None:
    """The number of processes torchrun started, or None outside torchrun."""
    if not all(name in os.environ for name in LAUNCH_VARIABLES):
        return None
    return int(os.environ["WORLD_SIZE"])


def check_launch(size: int) -> None:
    """TensorParallelError unless this process is one of `size` started by torchrun."""
    if size < 1:
        raise TensorParallelError("--tp must be at least 1")
    launched = launched_size()
    if launched is None:
        raise TensorParallelError(f"--tp {size} runs one process per GPU: launch it with torchrun, e.g. "
                                  f"torchrun --nproc-per-node {size} -m stdcli ask --tp {size} ...")
    if launched != size:
        raise TensorParallelError(f"--tp {size} needs {size} processes, torchrun started {launched} "
                                  f"(--nproc-per-node {size})")


def start(size: int, device_type: str) -> TensorParallel:
    """Join the group torchrun started (check_launch first); each rank takes GPU LOCAL_RANK on CUDA."""
    check_launch(size)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    group = dist.group.WORLD
    control = group if dist.get_backend(group) == "gloo" else dist.new_group(backend="gloo")
    parallel = TensorParallel(rank, size, device, group, control)
    # Sampling seeds its generator from Python's `random` where no seed is given: every rank must draw the same.
    random.seed(parallel.agree([random.randrange(2**62)])[0])
    return parallel


def check_shape(text_config: Any, size: int) -> None:
    """TensorParallelError unless the language model splits evenly over `size` ranks (whole KV heads per rank)."""
    kv_heads, q_heads = text_config.num_key_value_heads, text_config.num_attention_heads
    if kv_heads % size:
        raise TensorParallelError(f"--tp {size} does not divide the model's {kv_heads} KV heads: each rank holds "
                                  f"whole KV heads (use a --tp that divides {kv_heads})")
    if q_heads % size or text_config.intermediate_size % size:
        raise TensorParallelError(f"--tp {size} does not divide the model's {q_heads} query heads and "
                                  f"{text_config.intermediate_size} intermediate features")


def _keep(linear: nn.Linear, dim: int, part: int, parts: int) -> None:
    """Keep part `part` of `parts` equal slices of a linear layer's weight along `dim` (0: output rows, with the
    bias; 1: input columns)."""
    with torch.no_grad():
        size = linear.weight.shape[dim] // parts
        linear.weight = nn.Parameter(linear.weight.narrow(dim, part * size, size).clone(), requires_grad=False)
        if dim == 0:
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias.narrow(0, part * size, size).clone(), requires_grad=False)
            linear.out_features = size
        else:
            linear.in_features = size


def shard_language_model(model: Any, parallel: TensorParallel) -> None:
    """Split the model's language model in place, this rank keeping its part (the module docstring); its forward
    then sums the partial outputs of o_proj and down_proj over the ranks. Every other weight stays whole."""
    from .fused import language_model

    check_shape(model.config.get_text_config(), parallel.size)
    lm = language_model(model)
    if lm is None or not hasattr(lm, "layers"):
        raise TensorParallelError(f"tensor parallelism splits a language model's layers: {type(model).__name__} "
                                  "has none where it looks (model.language_model.layers)")
    rank, size = parallel.rank, parallel.size

    def summed(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return parallel.all_reduce(output)

    for layer in lm.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            _keep(linear, 0, rank, size)
        for linear in (attn.o_proj, mlp.down_proj):
            _keep(linear, 1, rank, size)
            linear.register_forward_hook(summed)


def weight_bytes_per_rank(model: Any, size: int) -> int:
    """Bytes of weights each of `size` ranks holds (a model on the meta device will do): the language model's
    layers split, everything else whole."""
    from .fused import language_model

    layers = language_model(model).layers
    split = {id(p): p for p in layers.parameters()}
    norms = {id(p) for layer in layers for name, p in layer.named_parameters() if "norm" in name}
    total = 0
    for p in {id(p): p for p in model.parameters()}.values():
        share = size if id(p) in split and id(p) not in norms else 1
        total += p.numel() * p.element_size() // share
    return total


@dataclass
class SharedPolicy(GammaPolicy):
    """A GammaPolicy whose choices are the leader's. Each rank measures its own step times, which differ a little,
    and would choose differently; but every rank must run the same steps (their collectives pair up)."""

    parallel: TensorParallel | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, policy: GammaPolicy, parallel: TensorParallel) -> SharedPolicy:
        state = {f.name: getattr(policy, f.name) for f in fields(GammaPolicy) if f.init}
        return cls(**state, parallel=parallel)

    def _agree(self, values: list[int]) -> list[int]:
        assert self.parallel is not None
        return self.parallel.agree(values)

    def choose(self) -> Cycle:
        cycle = super().choose()
        gamma, kind = self._agree([cycle.gamma, self.drafts.index(cycle.draft)])
        return Cycle(self.drafts[kind], gamma)

    def wants_sparse_view(self) -> bool:
        wanted = bool(self._agree([int(super().wants_sparse_view())])[0])
        self.can_draft = wanted
        return wanted
