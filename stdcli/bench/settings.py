"""What `stdcli bench` measures by default, and its argument parsing: importing this costs nothing (no torch),
so the command line can check its arguments before anything heavy loads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..engine.options import AUTO, DRAFT_KINDS, MAX_GAMMA

SCHEMA = "stdcli-bench/1"
METHODS = ("generate", "dense", "std")
DEFAULT_QUESTION = "What happens in this video?"
DEFAULT_MAX_NEW_TOKENS = 128
WARMUP_NEW_TOKENS = 16  # the warm-up runs of each method: enough to run every kernel and step kind once
DEFAULT_CONTEXTS = (16384, 65536)
DEFAULT_BATCHES = (1, 8)
PROFILE_GAMMAS = tuple(range(1, 10))  # verify widths measured for the projection (gamma 1..9)
DEFAULT_ITERS = 10  # timed iterations per step kind in the random-init profile (median reported)
WARMUP_ITERS = 2
DEFAULT_TEXT_TOKENS = 64  # non-visual prompt tokens of the profiled sparse view (all kept, besides the top-K)
ACCEPTANCE_RATES = (0.5, 0.55, 0.6, 0.65, 0.66, 0.7, 0.75, 0.8, 0.82, 0.85, 0.9, 0.95)
PROJECTION_LABEL = (
    "PROJECTION (cost model, not a measurement): speedup of StD over dense decoding that step costs measured here "
    "WOULD give at the assumed acceptance rates; random weights say nothing about acceptance"
)
PROJECTION_FORMULA = (
    "E = (1 - a^(g+1)) / (1 - a) tokens per cycle; speedup(a, g) = E * dense_step / (g * draft_step + verify(g)); "
    "best g per a among the measured gammas"
)
TIMING = (
    "wall clock around each call with device synchronization before and after; prefill_s: call -> first generated "
    "token on the host (transformers: the streamer's first put() of a generated token, which generate() makes after "
    "copying the token to the host; engine: its first on_tokens callback, after prefill synchronizes); decode_s: "
    "first token -> return; decode tokens/s = (new_tokens - 1) / decode_s for every method"
)
STEP_TIMING = (
    "Decoder.step on Slot states built over a cache filled with random KV (no prefill), fresh states before each "
    "step, median of iters after warmup_iters (StD steps of all gammas and K run round-robin); dense: "
    "DecodeStats.dense_s of Decoder(gamma=0).step(0) (the "
    "dense forward, token choice, host read-back); draft: DecodeStats.draft_s / gamma of Decoder.step(max gamma) "
    "(gamma sparse forwards, one synchronization); verify: DecodeStats.verify_s of Decoder.step(gamma) (the dense "
    "forward over gamma+1 tokens, acceptance, KV copy to the sparse view, host read-back)"
)
FLOOR = (
    "bytes a step must read / bandwidth: weights of the language model a step reads (decoder layers, final norm, "
    "lm_head; not the embedding table, of which it reads B rows, nor the vision tower) + the KV entries it attends "
    "to: dense B*(N+1), draft B*(K+text+1), verify B*(N+gamma+1) entries x kv_bytes_per_token (the attention layers'); "
    "a hybrid's linear-attention state, read and written by every step: + B*2*linear_state_bytes"
)
GIB = 1 << 30


class BenchError(Exception):
    """A benchmark that cannot run as asked; str() is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


Progress = Callable[[str], None] | None


def say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


def parse_int_list(text: str | Sequence[int] | None, name: str, minimum: int = 1) -> list[int] | None:
    """"16,64, 256" -> [16, 64, 256] (order kept, duplicates dropped); None stays None. BenchError if malformed."""
    if text is None:
        return None
    parts = [str(p).strip() for p in (text.split(",") if isinstance(text, str) else text)]
    try:
        values = [int(p) for p in parts if p]
    except ValueError:
        raise BenchError(f"{name} takes comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise BenchError(f"{name} is empty")
    low = [v for v in values if v < minimum]
    if low:
        raise BenchError(f"{name} values must be at least {minimum}, got {low[0]}")
    return list(dict.fromkeys(values))


def parse_gamma_list(text: str | None) -> list[int | str] | None:
    """"auto,1,4" -> ["auto", 1, 4]: StD gammas to bench, "auto" among them or not."""
    if text is None:
        return None
    parts = [p.strip().lower() for p in text.split(",")]
    counts = [p for p in parts if p != AUTO and p]
    fixed = parse_int_list(",".join(counts), "--gamma") or [] if counts else []
    if any(g > MAX_GAMMA for g in fixed):
        raise BenchError(f"--gamma values must be at most {MAX_GAMMA}, got {max(fixed)}")
    return ([AUTO] if AUTO in parts else []) + fixed




def parse_draft_list(text: str) -> list[str]:
    """"int4,sparse" -> ["int4", "sparse"]: StD draft kinds to bench, "auto" among them or not."""
    kinds = list(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    unknown = [k for k in kinds if k != AUTO and k not in DRAFT_KINDS]
    if not kinds or unknown:
        raise BenchError(f"--draft takes a comma-separated list of {', '.join(DRAFT_KINDS)} and auto, got {text!r}")
    return kinds
