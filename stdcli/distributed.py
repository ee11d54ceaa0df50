"""Data parallelism under torchrun: every process (a rank) answers its share of the videos, all into one output.

    torchrun --nproc-per-node 4 -m stdcli ask /data/videos "Summarize." --output runs/summary.jsonl

The rank, the number of ranks and each rank's GPU come from what torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK):
a rank decodes on cuda:LOCAL_RANK where there is CUDA, else on the CPU. docs/distributed.md is the user's account.
How `stdcli ask` runs under several ranks:

1. The start, its one collective: rank 0 alone reads the inputs (folders, stdin) and the output that --resume
   continues, estimates the work of every video left from its container's header (`estimated_work`), splits them
   (`split`) and broadcasts the plan; the process group is then destroyed. One rank reads the output once, so the
   split cannot depend on when each rank looked (records are being appended to it).
2. Each rank answers its share as one process would, appending each record to the output as it ends (one write()
   per line under a lock: records.JsonlWriter). No rank waits for another while it works: a slow or dead rank
   holds up none of the others, and a failed video costs its own record only.
3. The finish line (`FinishLine`): a rank that is done says so in the rendezvous store (a key-value store of
   torchrun's, not a collective), and waits there for the others before it exits. torchrun stops every rank as
   soon as one exits with a failure (status 1: some of its videos failed), and on several nodes a node whose
   ranks are done may leave before the others. A rank stops waiting when every rank is done, or when those still
   out have given no sign of life (a heartbeat every BEAT_S seconds) for STALE_S seconds: a rank that died on
   another node, which torchrun does not restart, must not hang the ranks that finished.

Everything here imports torch only when called: the command line reads `World` before it checks its options.
A model split over several GPUs would keep its process group (`process_group`) for the run, and the videos would
be split over groups of ranks rather than ranks.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from .errors import one_line
from .inputs import FrameOptions

T = TypeVar("T")

# How long ranks wait for one another at the start (rank 0 reads a large folder's headers while the others wait) and
# in the collectives of `stdcli bench`.
GROUP_TIMEOUT = timedelta(minutes=30)
BEAT_S = 5.0  # a rank that is still working says so this often
STALE_S = 120.0  # no sign of life from the ranks still working for this long: they are gone
POLL_S = 1.0  # how often a rank at the finish line looks again
DEVICES = ("auto", "cuda", "cpu")
FALLBACK_FAMILY = "qwen2-vl"  # for the estimate only, while a model still to download has no known family


class DistributedError(Exception):
    """A run under several ranks that cannot go as asked (a usage error, exit status 2)."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks torchrun started (one process on its own: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # its index on its node: which GPU it uses

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> World:
        try:
            rank, size, local = (int(env.get(name) or default) for name, default in
                                 (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
        except ValueError:
            raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them)") \
                from None
        if not 0 <= rank < size or local < 0:
            raise DistributedError(f"RANK {rank} and LOCAL_RANK {local} do not fit WORLD_SIZE {size}")
        return cls(rank, size, local)

    @property
    def several(self) -> bool:
        return self.size > 1


def rank_device(world: World, asked: str) -> str:
    """This rank's --device: auto or cuda is its own GPU, cuda:LOCAL_RANK (auto: the CPU where there is no CUDA),
    cpu the CPU. A device naming one GPU would put every rank on it."""
    text = asked.strip().lower()
    if text not in DEVICES:
        raise DistributedError(f"--device {asked}: under several ranks --device is auto, cuda (each rank on "
                               "cuda:LOCAL_RANK) or cpu")
    import torch

    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return "cpu"
    return f"cuda:{world.local_rank}"


# --- the split ------------------------------------------------------------------------------------------------------


def estimated_work(video: str, family: str | None, frames: FrameOptions) -> int:
    """The pixels the model will be given of `video`: the frames sampled (its family's rules and the user's
    options, applied to the duration and frame count the container's header states) times the pixels of each
    (after max_pixels). Read without decoding; 0 for a video that cannot be opened (it fails at once)."""
    from .ask import sampling_arguments
    from .model.prompts import frame_defaults
    from .video import VideoError, choose_frame_count, scaled_size, stated_size

    sampling = sampling_arguments(frame_defaults(family or FALLBACK_FAMILY), frames)
    try:
        size = stated_size(video)
        count = choose_frame_count(
            size.duration, max(size.frames, 1), fps=sampling["fps"], num_frames=sampling["num_frames"],
            min_frames=sampling["min_frames"], max_frames=sampling["max_frames"], multiple_of=sampling["multiple_of"],
        )
    except (VideoError, ValueError):  # ValueError: sampling options no video can meet; its record will say so
        return 0
    width, height = scaled_size(size.width, size.height, sampling["max_pixels"])
    return count * width * height


def split(items: Sequence[T], works: Sequence[int], ranks: int) -> list[list[T]]:
    """Shares of `items` for `ranks` ranks, each in the items' own order, balanced by work: the largest first, each
    to the rank with the least work so far (on a tie, the one with the fewest items, then the lowest: items of one
    size are spread by count). The same on every rank for the same input."""
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for i in sorted(range(len(items)), key=lambda i: (-works[i], i)):
        rank = min(range(ranks), key=lambda r: (loads[r], len(shares[r]), r))
        loads[rank] += works[i]
        shares[rank].append(i)
    return [[items[i] for i in sorted(share)] for share in shares]


# --- the process group and the start --------------------------------------------------------------------------------


@dataclass
class Group:
    """Every rank's process group, for the collectives of the start and of `stdcli bench`. Object collectives go
    through gloo (CPU) whatever the device; CUDA tensors would go through NCCL."""

    world: World
    store: Any  # torch.distributed.Store: the rendezvous store of torchrun

    def broadcast(self, value: T | None) -> T:
        """Rank 0's value, on every rank."""
        import torch.distributed as dist

        message = [value]
        dist.broadcast_object_list(message, src=0)
        return message[0]  # type: ignore[return-value]

    def gather(self, value: T) -> list[T] | None:
        """On rank 0, every rank's value in rank order; None on the others."""
        import torch.distributed as dist

        values: list[Any] | None = [None] * self.world.size if self.world.rank == 0 else None
        dist.gather_object(value, values, dst=0)
        return values

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def process_group(world: World, device: str) -> Iterator[Group]:
    """The process group of every rank, for the block: gloo, and NCCL beside it where this rank has a GPU.
    DistributedError where the ranks cannot meet."""
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    try:
        store, _, _ = next(dist.rendezvous("env://", timeout=GROUP_TIMEOUT))
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", store=store, rank=world.rank,
                                world_size=world.size, timeout=GROUP_TIMEOUT)
    except (ValueError, RuntimeError) as error:  # no torchrun around (MASTER_ADDR unset), a rank that never came
        raise DistributedError(f"the {world.size} ranks cannot meet (start them with torchrun): {one_line(error)}") \
            from error
    try:
        yield Group(world, store)
    finally:
        dist.destroy_process_group()


@dataclass(frozen=True)
class Plan:
    """What rank 0 decided at the start, the same on every rank."""

    run: str  # this run's own id: its keys in the rendezvous store (which outlives a run that torchrun restarts)
    shares: list[list[Any]]  # each rank's videos (with their questions), in input order
    code: int | None = None  # set: rank 0 found the run cannot go (and said why); every rank exits with it


def start(world: World, device: str, videos: Callable[[], list[T] | int], work: Callable[[T], int]
          ) -> tuple[Plan, FinishLine]:
    """The start of `stdcli ask` under several ranks (point 1 of the module docstring). `videos()`, called on
    rank 0 only, gives the videos left to answer (each with its questions), or the exit status of a run that cannot
    go; `work(video)` the estimate the split balances."""
    with process_group(world, device) as group:
        plan = None
        if world.rank == 0:
            todo, run = videos(), uuid.uuid4().hex
            if isinstance(todo, int):
                plan = Plan(run, [], code=todo)
            else:
                plan = Plan(run, split(todo, [work(video) for video in todo], world.size))
        plan = group.broadcast(plan)
        store = group.store
    import torch.distributed as dist

    return plan, FinishLine(dist.PrefixStore(f"stdcli/{plan.run}", store), world.size)


# --- the finish line ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """The group's outcome as the finish line saw it."""

    ranks: int  # ranks that reached it
    size: int  # ranks of the group
    records: int  # records those ranks wrote
    failed: int  # of which failed videos

    @property
    def lost(self) -> int:
        """Ranks that never reached it: they died, or stopped showing signs of life."""
        return self.size - self.ranks


class FinishLine:
    """Where ranks wait for one another at the end, through the rendezvous store (point 3 of the module docstring).
    Made at the start: it beats for this rank until `cross`."""

    def __init__(self, store: Any, size: int):
        self.store = store
        self.size = size
        self._done = threading.Event()
        threading.Thread(target=self._beat, name="stdcli-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._done.wait(BEAT_S):
            try:
                self.store.add("beat", 1)
            except RuntimeError:  # the store went away: there is no one left to tell
                return

    def cross(self, records: int, failed: int) -> Finished | None:
        """This rank is done, having written `records` (`failed` of them failures): wait for the others, as long
        as some still show signs of life, and say how the group ended (None: the store went away, nothing is
        known of the others)."""
        self._done.set()
        try:
            self.store.add("records", records)
            self.store.add("failed", failed)
            ranks = self.store.add("finished", 1)
            beats, seen = -1, time.monotonic()
            while ranks < self.size:
                time.sleep(POLL_S)
                now = self.store.add("beat", 0)
                if now != beats:
                    beats, seen = now, time.monotonic()
                elif time.monotonic() - seen > STALE_S:
                    break
                ranks = self.store.add("finished", 0)
            return Finished(ranks, self.size, self.store.add("records", 0), self.store.add("failed", 0))
        except RuntimeError:  # torch's store errors (DistStoreError, DistNetworkError) are RuntimeErrors
            return None
