"""Load what comes next in a background thread while the caller works on what it has: a prefetch bounded by the
bytes it holds, not by a count. No torch: it knows only sources, a load function and bytes.

    with Prefetch(videos, load, budget=2 << 30) as loaded:
        for result in loaded:      # load(video, reserve) of each video, in the videos' order
            ...

`load(source, reserve)` calls `reserve(nbytes)` before it allocates what it will hold (the frames of a video,
say): the call waits until those bytes fit in the budget beside everything loaded and not yet handed out. A
source larger than the whole budget waits until nothing else is held, then loads alone. An item's bytes count
until it is handed out; from then on they are the caller's. Leaving the `with` block (or `close()`) stops the
worker and waits for it: a load under way finishes first (a load cannot be cut short), a load waiting for room
ends at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

S = TypeVar("S")
R = TypeVar("R")

Reserve = Callable[[int], None]

# The default budget: a quarter of the host memory available as the run starts, at most 4 GiB (reading further
# ahead buys nothing once the next videos are ready, and the model needs the memory more).
DEFAULT_SHARE = 4
DEFAULT_CAP = 4 << 30


def default_budget(available: int) -> int:
    """The default prefetch budget for `available` bytes of free host memory: a quarter of it, at most 4 GiB."""
    return max(1, min(available // DEFAULT_SHARE, DEFAULT_CAP))


class _Cancelled(BaseException):
    """Raised by `reserve` in the worker once the prefetch is closed. Not an Exception: a load that turns its own
    errors into results (a failed record) must not catch it."""


@dataclass
class _Failed:
    """What the worker raised (from a load, or from iterating the sources): raised again to the consumer, in
    its place."""

    error: BaseException


class Prefetch(Iterator[R], Generic[S, R]):
    """`load(source, reserve)` of every source, run ahead in one background thread and handed out in order;
    at most `budget` bytes reserved at any time, but for one source larger than the budget, which is loaded alone.
    An exception the load raises is raised by `next` in that source's place, and iteration ends there."""

    def __init__(self, sources: Iterable[S], load: Callable[[S, Reserve], R], budget: int):
        if budget < 1:
            raise ValueError(f"budget must be at least 1 byte, got {budget}")
        self.budget = budget
        self._sources = sources
        self._load = load
        self._lock = threading.Condition()
        self._ready: deque[tuple[R | _Failed, int]] = deque()  # loaded, not handed out: (result, bytes reserved)
        self._held = 0  # bytes reserved by the ready items and by the one being loaded
        self._finished = False  # the worker has put its last item
        self._stopped = False  # closed: the worker stops at its next chance
        self._thread = threading.Thread(target=self._work, name="stdcli-prefetch")
        self._thread.start()

    @property
    def held(self) -> int:
        """Bytes reserved now: items loaded and not handed out, and the one being loaded."""
        with self._lock:
            return self._held

    def __iter__(self) -> Prefetch[S, R]:
        return self

    def __next__(self) -> R:
        with self._lock:
            while not self._ready and not self._finished:
                self._lock.wait()
            if not self._ready:
                raise StopIteration
            result, size = self._ready.popleft()
            self._held -= size
            self._lock.notify_all()
        if isinstance(result, _Failed):
            self.close()
            raise result.error
        return result

    def close(self) -> None:
        """Stop the worker and wait for it (a load under way finishes first); what was loaded is dropped."""
        with self._lock:
            self._stopped = True
            self._held -= sum(size for _, size in self._ready)
            self._ready.clear()
            self._lock.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Prefetch[S, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        mine = 0  # bytes reserved by the source being loaded

        def reserve(nbytes: int) -> None:
            nonlocal mine
            with self._lock:
                # room in the budget, or nothing held but this source's own bytes: it then loads alone
                while not self._stopped and self._held - mine > 0 and self._held + nbytes > self.budget:
                    self._lock.wait()
                if self._stopped:
                    raise _Cancelled
                self._held += nbytes
                mine += nbytes

        try:
            for source in self._sources:
                if self._stopped:
                    return
                result = self._load(source, reserve)
                self._put(result, mine)
                mine = 0
        except _Cancelled:
            with self._lock:
                self._held -= mine
        except BaseException as error:  # the consumer's to handle: raised again there, in its place
            self._put(_Failed(error), mine)
        finally:
            with self._lock:
                self._finished = True
                self._lock.notify_all()

    def _put(self, result: R | _Failed, size: int) -> None:
        with self._lock:
            if self._stopped:
                self._held -= size
                return
            self._ready.append((result, size))
            self._lock.notify_all()
