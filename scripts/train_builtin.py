"""Train the built-in Video-LLM: a small Qwen2-VL on clips of the generated world (stdcli.world).

    python scripts/train_builtin.py --out runs/builtin --seed 1           # one H100/H200, 8.5 minutes
    python scripts/train_builtin.py --out runs/builtin --seed 1 --resume  # continue after an interruption

Seeded and resumable (a checkpoint every --save-every minutes holds model, optimizer, step and time). Frames go
through exactly the inference path: rendered at the samples' 224x224, sampled at the timestamps `sample_frames`
would pick in an 8 fps video (2 fps, even count, linspace indices), then the model's own processor. Each clip is
one sequence: the video once, then each of its questions as a branch that sees only the video and itself (Example);
the loss is on the answers (and their <|im_end|>), plus probes of the visual tokens (region_targets, timeline_targets).
Writes OUT/train.log (JSON lines), OUT/final/ (the checkpoint, float16 safetensors).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import InterpolationMode, resize
from transformers import Qwen2VLModel

from stdcli.engine.attention import use_packed_vision_attention
from stdcli.model.build import build_random_model, make_config, make_processor, make_tokenizer
from stdcli.video import choose_frame_count, target_indices
from stdcli.world import QA, corpus, describe, generate_clip, questions_for, render_frames
from stdcli.world.scene import COLORS, EVENT_KINDS, SHAPES, object_state_at

SOURCE_FPS = 8.0  # the samples are written at 8 fps
FRAME_EDGE = 224  # the samples' frame size; the processor resizes to 112
MODEL_EDGE = 112
MODEL_PIXELS = MODEL_EDGE * MODEL_EDGE
GRID = MODEL_EDGE // 28  # merged visual tokens per frame side
LOOKS = len(SHAPES) * len(COLORS)  # classes of the auxiliary region targets
MOTION = ("left", "right", "up", "down")
# Normalized displacement between the two frames of a token that counts as moving: moves cover at least 0.033 per
# half second, the slow drift of long clips' still objects at most 0.0004.
MOTION_THRESHOLD = 0.008
# Questions of each type per training clip (the evaluation asks 2): each is a branch of ~25 tokens on a video prefix
# of hundreds to thousands, so more questions are nearly free supervision. Order and when questions, the ones that
# need the times of events, get more: they were the last ones the model learned.
QUESTIONS_PER_TYPE = {"color": 3, "shape": 3, "count": 3, "direction": 3, "order": 6, "when": 4}
TRAIN_SEED_BASE = 0  # training clips use seeds below EVAL_SEED_BASE
EVAL_SEED_BASE = 10_000_000

BUILTIN_TEXT = {
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 8,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
}
BUILTIN_VISION = {
    "depth": 4,
    "embed_dim": 192,
    "hidden_size": 256,
    "mlp_ratio": 4,
    "num_heads": 3,
    "initializer_range": 0.02,
}


def builtin_tokenizer():
    # whole descriptions too, so " Then" and friends become single tokens
    sentences = corpus() + [describe(generate_clip(s, "short")) for s in range(EVAL_SEED_BASE - 2000, EVAL_SEED_BASE)]
    return make_tokenizer("qwen2-vl", sentences, vocab_size=640)


def builtin_processor(tokenizer):
    return make_processor(
        "qwen2-vl", tokenizer, min_pixels=MODEL_PIXELS, max_pixels=MODEL_PIXELS,
        image_min_pixels=MODEL_PIXELS, image_max_pixels=MODEL_PIXELS,
    )


def builtin_config(tokenizer, layers: int = BUILTIN_TEXT["num_hidden_layers"]):
    return make_config(
        "qwen2-vl", "tiny", tokenizer=tokenizer, text_config=dict(BUILTIN_TEXT, num_hidden_layers=layers),
        vision_config=BUILTIN_VISION,
        tie_word_embeddings=True,
    )


def sample_timestamps(duration: float, fps: float) -> list[float]:
    """The timestamps sample_frames picks from an 8 fps video of this duration at `fps`."""
    source = max(1, int(round(duration * SOURCE_FPS)))
    count = choose_frame_count(duration, source, fps=fps, num_frames=None, min_frames=4, max_frames=768, multiple_of=2)
    return [i / SOURCE_FPS for i in target_indices(source, count)]


def first_turn(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def model_frames(clip, timestamps: list[float], realistic: bool) -> torch.Tensor:
    """uint8 [T, 112, 112, 3]: rendered at 224 and resized like the processor does (realistic), or drawn at 112."""
    if not realistic:
        return torch.from_numpy(render_frames(clip, timestamps, MODEL_EDGE))
    frames = torch.from_numpy(render_frames(clip, timestamps, FRAME_EDGE)).permute(0, 3, 1, 2)
    resized = resize(frames, [MODEL_EDGE, MODEL_EDGE], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return resized.permute(0, 2, 3, 1)


def pixel_values(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The Qwen2-VL video processor's rescale, normalize and patchify, for frames already at 112x112.

    frames [T, 112, 112, 3] (T even; uint8, or float in 0..255) -> [T/2 * 8 * 8, 3 * 2 * 14 * 14], patches in the
    processor's order.
    """
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean[:, None, None]) / std[:, None, None]
    t, c = x.shape[0] // 2, x.shape[1]
    g = MODEL_EDGE // 14
    x = x.reshape(t, 2, c, g // 2, 2, 14, g // 2, 2, 14)
    return x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * g * g, c * 2 * 14 * 14)


def add_noise(frames: torch.Tensor, noisy: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Mild sensor/codec noise on the frames flagged `noisy` ([T] bool), so decoded H.264 frames look familiar.

    On the training device: drawn in the data workers it cost them three quarters of their time (long clips have
    hundreds of frames)."""
    noise = torch.randn(frames.shape, device=frames.device) * (sigma * noisy.float()[:, None, None, None])
    return (frames.float() + noise).round().clamp(0, 255)


def grid_cell(x: float, y: float) -> tuple[int, int]:
    """(row, column) of the merged visual token whose region holds the normalized point (x, y)."""
    return min(int(y * GRID), GRID - 1), min(int(x * GRID), GRID - 1)


def region_targets(clip, timestamps: list[float]) -> torch.Tensor:
    """[T/2 * GRID * GRID, LOOKS + 4] multi-hot targets of each merged visual token's region: which (shape, color)
    has its center there (LOOKS columns), and which way an object centered there moves between the two frames of
    the token (MOTION: left, right, up, down).

    Training-only supervision of the vision tower: a ViT trained from scratch through the language loss alone
    learns to see far too slowly (the language model first learns to guess from the question), so the
    visual tokens are also asked, through a linear probe discarded after training, what they show. Motion is asked
    because nothing else carries it: the vision tower sees the two frames of a token together, but the language
    model's M-RoPE gives horizontal places rotations of at most 0.01 rad (they get its lowest frequencies), so it
    cannot tell where a token is, and without this a model learned everything but which way things move.
    """
    groups = len(timestamps) // 2
    targets = torch.zeros(groups, GRID, GRID, LOOKS + len(MOTION))
    for g in range(groups):
        pair = timestamps[2 * g : 2 * g + 2]
        for obj, o in enumerate(clip.objects):
            states = [object_state_at(clip, obj, t) for t in pair]
            dx, dy = states[1][1] - states[0][1], states[1][2] - states[0][2]
            moving = max(abs(dx), abs(dy)) > MOTION_THRESHOLD
            way = (("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up"))
            for visible, x, y, color in states:
                if not visible:
                    continue
                cell = targets[(g, *grid_cell(x, y))]
                cell[SHAPES.index(o.shape) * len(COLORS) + COLORS.index(color)] = 1
                if moving:
                    cell[LOOKS + MOTION.index(way)] = 1
    return targets.flatten(0, 2)


def timeline_targets(clip, timestamps: list[float]) -> torch.Tensor:
    """[T/2 * GRID * GRID, 1 + len(EVENT_KINDS)] targets of each merged visual token, for the language model's
    hidden states halfway through (TimelineProbe): log(1 + its frame pair's index), and which kinds of event
    happen at its region since the previous frame pair.

    Order and when questions need the time of an event, which nothing in a visual token tells: the vision tower
    sees two frames and no time, and a token's M-RoPE time is a rotation that relative attention scores can use but
    that does not sit in the token's own state. Left to the answers alone, the model learned to find events but
    answered "Does A happen before B?" at chance. The index is counted from the start (a token cannot see the end of
    the video: causal attention) and as a logarithm, so that which third of a clip a token lies in is a difference
    with the video's own log length. Events are asked at the language model, not the vision tower, because most
    changes happen between two frame pairs, and only the language model sees both.
    """
    groups = len(timestamps) // 2
    targets = torch.zeros(groups, GRID, GRID, 1 + len(EVENT_KINDS))
    targets[..., 0] = torch.log1p(torch.arange(groups, dtype=torch.float32))[:, None, None]
    for g in range(groups):
        since = timestamps[2 * g - 1] if g else -math.inf
        pair = timestamps[2 * g : 2 * g + 2]
        for event in clip.events:
            if not (event.time < pair[1] and event.end > since):
                continue
            # where the object is, seen or not (an object that disappears is gone from the frames)
            for t in ([since] if g else []) + pair:
                _, x, y, _ = object_state_at(clip, event.obj, t)
                targets[(g, *grid_cell(x, y), 1 + EVENT_KINDS.index(event.kind))] = 1
    return targets.flatten(0, 2)


def split_prompt(prompt: str) -> tuple[str, str]:
    """(the prompt up to the end of the video, the rest: question and assistant header)."""
    cut = prompt.index("<|vision_end|>") + len("<|vision_end|>")
    return prompt[:cut], prompt[cut:]


class Example:
    """One clip with its questions, as token ids, labels, loss weights and branch ids, plus frames and the probes'
    targets (region_targets, timeline_targets).

    The video prefix (system prompt, user turn up to the end of the video) comes once; then every question with its
    answer is a branch (``branches``: 0 for the prefix, k for the k-th question) that sees the prefix and itself
    only, at the positions it would have if asked alone (``offsets``: for each token after the prefix, its place
    within its branch; the prefix keeps the model's own positions, see collate). `ask` and the evaluation put one
    question to a video at a time. Asked as one multi-turn conversation, later answers could be copied from earlier
    turns instead of seen: "Does the red circle move left before the square turns blue?" tells which way the circle
    moves, and its color.

    Every answer sentence weighs the same in the loss, whatever its length: counted per token, the long, mostly
    predictable descriptions would drown the one-word answers that can only be got right by looking; a description
    of three events weighs as much as three short answers.
    """

    def __init__(self, processor, frames: torch.Tensor, noisy: bool, qas: list[QA], regions: torch.Tensor,
                 timeline: torch.Tensor):
        tokenizer = processor.tokenizer
        tokens = (frames.shape[0] // 2) * (MODEL_EDGE // 28) ** 2
        pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        prefix, _ = split_prompt(first_turn(processor, ""))
        ids = []
        for token in tokenizer(prefix, add_special_tokens=False).input_ids:  # expanded as the processor does
            ids += [token] * (tokens if token == pad else 1)
        self.prefix_len = len(ids)
        labels, weights, branches, offsets = [-100] * len(ids), [0.0] * len(ids), [0] * len(ids), []
        for k, qa in enumerate(qas, start=1):
            asked = split_prompt(first_turn(processor, qa.question))[1]
            question = tokenizer(asked, add_special_tokens=False).input_ids
            answer = tokenizer(qa.answer, add_special_tokens=False).input_ids + [end]
            sentences = max(1, qa.answer.count("."))
            ids += question + answer
            labels += [-100] * len(question) + answer
            weights += [0.0] * len(question) + [sentences / len(answer)] * len(answer)
            branches += [k] * (len(question) + len(answer))
            offsets += list(range(len(question) + len(answer)))
        self.ids, self.labels, self.weights, self.branches, self.offsets = ids, labels, weights, branches, offsets
        self.frames, self.noisy, self.regions, self.timeline = frames, noisy, regions, timeline


def make_example(processor, seed: int, rng: random.Random, long_share: float = 0.2) -> Example:
    kind = "long" if rng.random() < long_share else "short"
    clip = generate_clip(seed, kind)
    fps = 2.0 if rng.random() < 0.8 else rng.uniform(1.0, 3.0)
    timestamps = sample_timestamps(clip.duration, fps)
    frames = model_frames(clip, timestamps, realistic=kind == "short" and rng.random() < 0.4)
    noisy = rng.random() < 0.5  # the noise itself is drawn on the training device (add_noise)
    qas = questions_for(clip, rng, per_type=QUESTIONS_PER_TYPE)
    return Example(processor, frames, noisy, qas, region_targets(clip, timestamps), timeline_targets(clip, timestamps))


def rope_indexer(tokenizer):
    """The model's own M-RoPE position function, on a weightless (meta) model: data workers compute position ids,
    which the model would otherwise work out sequence by sequence in Python at every training step."""
    with torch.device("meta"):
        return Qwen2VLModel(builtin_config(tokenizer)).get_rope_index


def collate(examples: list[Example], pad_id: int, video_id: int, rope_index) -> dict[str, torch.Tensor]:
    """Right-padded rows; ``branches`` (-1 on padding) becomes the attention mask on the device (branch_mask), and
    ``position_ids`` are the model's own M-RoPE positions of the prefix, then each branch's text positions, from
    where a lone question's would start."""
    # a multiple of 16: the memory-efficient SDPA kernel wants the mask's rows aligned
    length = -(-max(len(e.ids) for e in examples) // 16) * 16
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    weights = torch.zeros((len(examples), length))
    branches = torch.full((len(examples), length), -1, dtype=torch.long)
    positions = torch.zeros((3, len(examples), length), dtype=torch.long)
    g = MODEL_EDGE // 14
    grid = torch.tensor([[e.frames.shape[0] // 2, g, g] for e in examples])
    for row, e in enumerate(examples):
        n, p = len(e.ids), e.prefix_len
        ids[row, :n] = torch.tensor(e.ids)
        labels[row, :n] = torch.tensor(e.labels)
        weights[row, :n] = torch.tensor(e.weights)
        branches[row, :n] = torch.tensor(e.branches)
        prefix = ids[row : row + 1, :p]
        prefix_positions = rope_index(prefix, (prefix == video_id).long() * 2, video_grid_thw=grid[row : row + 1])[0]
        positions[:, row, :p] = prefix_positions[:, 0]
        # text goes on from the prefix's last token (<|vision_end|>), whose three positions are equal
        positions[:, row, p:n] = prefix_positions[0, 0, -1] + 1 + torch.tensor(e.offsets)
    batch = {
        "input_ids": ids,
        "labels": labels,
        "weights": weights,
        "mm_token_type_ids": (ids == video_id).long() * 2,
        "frames": torch.cat([e.frames for e in examples]),
        "noisy": torch.cat([torch.full((e.frames.shape[0],), e.noisy) for e in examples]),
        "regions": torch.cat([e.regions for e in examples]),
        "timeline": torch.cat([e.timeline for e in examples]),
        "video_grid_thw": grid,
        "branches": branches,
        "position_ids": positions,
    }
    return batch


def branch_mask(branches: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] bool attention mask of a collated batch: token i sees tokens j <= i of the prefix (branch 0) and
    of its own branch."""
    causal = torch.ones(branches.shape[1], branches.shape[1], dtype=torch.bool, device=branches.device).tril()
    visible = (branches[:, None, :] == 0) | (branches[:, None, :] == branches[:, :, None])
    return (visible & causal)[:, None]


class Batches(torch.utils.data.IterableDataset):
    """Endless batches of at most `tokens` padded tokens; each worker draws its own clip seeds.

    Examples wait in a pool and leave it longest first, so a batch holds examples of similar length. Until the
    wall-clock time `short_until`, clips are short only: the vision tower learns to see on cheap examples first.
    """

    def __init__(self, seed: int, tokens: int, short_until: float):
        self.seed, self.tokens, self.short_until = seed, tokens, short_until
        self.pool_size = max(96, 96 * tokens // 48_000)  # room for a full batch of short clips from one worker

    def __iter__(self):
        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        processor = builtin_processor(builtin_tokenizer())
        pad_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        rope_index = rope_indexer(processor.tokenizer)
        rng = random.Random(self.seed * 1000 + worker)
        clip_seed = TRAIN_SEED_BASE + self.seed * 1_000_000 + worker
        pool: list[Example] = []
        while True:
            while len(pool) < self.pool_size:
                long_share = 0.0 if time.time() < self.short_until else 0.25
                pool.append(make_example(processor, clip_seed, rng, long_share))
                clip_seed += workers
            pool.sort(key=lambda e: len(e.ids))
            count = max(1, min(len(pool), self.tokens // len(pool[-1].ids)))
            batch, pool = pool[-count:], pool[:-count]
            yield collate(batch, pad_id, video_id, rope_index)


def check_against_processor(processor) -> None:
    """Our token expansion and pixel values must equal the processor's (the inference path)."""
    clip = generate_clip(1, "short")
    timestamps = sample_timestamps(clip.duration, 2.0)
    qa = questions_for(clip, random.Random(1))[0]
    reference = processor(
        text=[first_turn(processor, qa.question)], videos=[render_frames(clip, timestamps, FRAME_EDGE)],
        return_tensors="pt", videos_kwargs={"do_sample_frames": False},
    )
    ours = Example(processor, model_frames(clip, timestamps, realistic=True), False, [qa],
                   region_targets(clip, timestamps), timeline_targets(clip, timestamps))
    mean = torch.tensor(processor.video_processor.image_mean)
    std = torch.tensor(processor.video_processor.image_std)
    assert ours.ids[: reference["input_ids"].shape[1]] == reference["input_ids"][0].tolist(), "token ids differ"
    error = (pixel_values(ours.frames, mean, std) - reference["pixel_values_videos"]).abs().max().item()
    assert error < 1e-4, f"pixel values differ by {error}"


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the tokens where `mask` (0/1, same shape) is 1; 0 where there are none."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


class RegionProbe(torch.nn.Module):
    """A linear probe on the merged visual tokens, fed by a forward hook on the vision tower's merger."""

    def __init__(self, model):
        super().__init__()
        self.head = torch.nn.Linear(model.config.get_text_config().hidden_size, LOOKS + len(MOTION))
        self.features: torch.Tensor | None = None
        model.model.visual.merger.register_forward_hook(lambda module, args, output: setattr(self, "features", output))

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features.float())
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        # summed over the classes: a mean over 24 mostly-absent classes would make the signal vanishingly small
        looks = bce[:, :LOOKS].sum(-1).mean()
        # motion only where an object is: over all tokens, mostly empty background, it would vanish too
        motion = masked_mean(bce[:, LOOKS:].sum(-1), targets[:, :LOOKS].amax(-1))
        return looks + motion


class TimelineProbe(torch.nn.Module):
    """A linear probe on the language model's visual tokens halfway through its layers (timeline_targets), fed by a
    forward hook: the first half works the times and events out, the second half retrieves and compares them."""

    def __init__(self, model):
        super().__init__()
        hidden = model.config.get_text_config().hidden_size
        # normalized like the model's own layers' inputs: the residual stream's scale grows and varies in training
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, 1 + len(EVENT_KINDS)))
        self.features: torch.Tensor | None = None
        layers = model.model.language_model.layers
        layer = layers[len(layers) // 2 - 1]
        layer.register_forward_hook(lambda module, args, output: setattr(self, "features", output))

    def loss(self, targets: torch.Tensor, visual: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """`visual`: [B, L] bool, where the visual tokens are; `regions`: their region_targets."""
        out = self.head(self.features[visual].float())
        index = torch.nn.functional.mse_loss(out[:, 0], targets[:, 0])
        bce = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1:], targets[:, 1:], reduction="none")
        # where an object or an event is, as for the motion targets
        events = masked_mean(bce.sum(-1), torch.maximum(regions[:, :LOOKS].amax(-1), targets[:, 1:].amax(-1)))
        return index + events


class Probes(torch.nn.Module):
    """The training-only probes, discarded after training: region_targets on the vision tower's output,
    timeline_targets on the language model's."""

    def __init__(self, model):
        super().__init__()
        self.region, self.timeline = RegionProbe(model), TimelineProbe(model)


def losses(model, probes: Probes, batch: dict, mean, std, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(language loss: mean over answers of their mean token loss, region loss of the visual tokens, timeline loss of
    the language model's visual tokens) of one batch."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    regions, labels, weights = batch.pop("regions"), batch.pop("labels"), batch.pop("weights")
    timeline = batch.pop("timeline")
    batch["attention_mask"] = branch_mask(batch.pop("branches"))
    batch["pixel_values_videos"] = pixel_values(add_noise(batch.pop("frames"), batch.pop("noisy")), mean, std)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(**batch, use_cache=False).logits[:, :-1]
    targets, weights = labels[:, 1:].flatten(), weights[:, 1:].flatten()
    # every position, not logits[targets != -100]: boolean indexing would make the host wait for the GPU each step.
    # Positions without an answer token have weight 0 and lose nothing (ignore_index gives them loss 0).
    token_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets, reduction="none")
    lm_loss = (token_loss * weights).sum() / weights.sum()
    visual = batch["mm_token_type_ids"] == 2
    return lm_loss, probes.region.loss(regions), probes.timeline.loss(timeline, visual, regions)


def blank_frames(batch: dict) -> dict:
    """The batch with black, noiseless frames: its loss tells whether the answers still depend on what is seen."""
    return dict(batch, frames=torch.zeros_like(batch["frames"]), noisy=torch.zeros_like(batch["noisy"]))


def vision_in_float32(model) -> None:
    """Keep the vision tower out of bfloat16 autocast: in bf16 its gradients overflowed to NaN at the peak learning
    rate (half the steps of a run were skipped). Its matmuls use TF32 (main)."""
    visual = model.model.visual
    forward = visual.forward

    def float32_forward(hidden_states, *args, **kwargs):
        with torch.autocast(hidden_states.device.type, enabled=False):
            return forward(hidden_states.float(), *args, **kwargs)

    visual.forward = float32_forward


@dataclass
class Trainer:
    """Everything a training step touches: the model, its training-only probes, the optimizer over both, and the
    processor's normalization constants on the device."""

    processor: object
    model: torch.nn.Module
    probes: Probes
    optimizer: torch.optim.Optimizer
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device

    @classmethod
    def build(cls, layers: int, lr: float, seed: int, device: torch.device) -> Trainer:
        # TF32 tensor cores for the float32 vision tower (vision_in_float32): float32's range at tensor-core speed.
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        tokenizer = builtin_tokenizer()
        processor = builtin_processor(tokenizer)
        check_against_processor(processor)
        model = build_random_model("qwen2-vl", builtin_config(tokenizer, layers), seed=seed, device=str(device)).train()
        use_packed_vision_attention(model)
        vision_in_float32(model)
        probes = Probes(model).to(device)
        optimizer = torch.optim.AdamW(list(model.parameters()) + list(probes.parameters()), lr=lr, betas=(0.9, 0.98),
                                      weight_decay=0.05, fused=device.type == "cuda")
        mean = torch.tensor(processor.video_processor.image_mean, device=device)
        std = torch.tensor(processor.video_processor.image_std, device=device)
        return cls(processor, model, probes, optimizer, mean, std, device)

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def train_step(trainer: Trainer, batch: dict, region_weight: float, timeline_weight: float):
    """One optimizer step. Returns (language loss, region loss, timeline loss, gradient norm, finite), all still on
    the device: reading them here would make the host wait for the GPU at every step instead of queueing the next
    one."""
    lm_loss, region_loss, timeline_loss = losses(trainer.model, trainer.probes, batch, trainer.mean, trainer.std,
                                                 trainer.device)
    loss = lm_loss + region_weight * region_loss + timeline_weight * timeline_loss
    loss.backward()
    trained = trainer.parameters
    norm = torch.nn.utils.clip_grad_norm_(trained, 1.0)
    finite = torch.isfinite(loss) & torch.isfinite(norm)
    # a rare bf16 overflow must not poison the weights: its gradients become zeros (Adam's moments only decay)
    for p in trained:
        if p.grad is not None:
            p.grad = torch.where(finite, p.grad, 0.0)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return lm_loss.detach(), region_loss.detach(), timeline_loss.detach(), norm, finite


@contextmanager
def profile_to(path: Path, label: str, steps: int):
    """Profile the block (`steps` training steps) with torch.profiler; append its per-op CPU and CUDA times and the
    wall time per step (device synchronized at both ends) to `path`."""
    cuda = torch.cuda.is_available()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.profiler.profile(activities=activities) as profiler:
        yield
        if cuda:
            torch.cuda.synchronize()
    wall = (time.perf_counter() - started) / steps
    table = profiler.key_averages()
    with path.open("a") as f:
        f.write(f"== {label}: {steps} steps, {wall * 1000:.1f} ms per step (profiled)\n")
        for key in (["self_cuda_time_total"] if cuda else []) + ["self_cpu_time_total"]:
            f.write(table.table(sort_by=key, row_limit=25) + "\n")


def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    if progress < warmup:
        return peak * progress / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/builtin"))
    parser.add_argument("--minutes", type=float, default=8.5, help="training time budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=48_000, help="padded tokens per batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layers", type=int, default=BUILTIN_TEXT["num_hidden_layers"], help="language model layers")
    parser.add_argument("--region-weight", type=float, default=1.0, help="weight of the vision tower's region loss")
    parser.add_argument("--timeline-weight", type=float, default=1.0,
                        help="weight of the timeline loss of the language model's visual tokens")
    parser.add_argument("--short-first", type=float, default=0.35, help="share of the time on short clips only")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--save-every", type=float, default=2.0, help="minutes between checkpoints")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="profile 5 steps on short clips (from step 200) and 5 on mixed ones "
                        "(from 70%% of the time) "
                             "into OUT/profile.txt")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)

    trainer = Trainer.build(args.layers, args.lr, args.seed, device)
    model, probes, optimizer, mean, std = trainer.model, trainer.probes, trainer.optimizer, trainer.mean, trainer.std
    processor = trainer.processor
    step, trained_s, resumes = 0, 0.0, 0
    state_path = args.out / "state.pt"
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        probes.load_state_dict(state["probes"])
        optimizer.load_state_dict(state["optimizer"])
        step, trained_s, resumes = state["step"], state["trained_s"], state["resumes"] + 1
    params = sum(p.numel() for p in model.parameters())
    log = (args.out / "train.log").open("a")

    def record(entry: dict) -> None:
        log.write(json.dumps(entry) + "\n")
        log.flush()
        print(json.dumps(entry), flush=True)

    record({"event": "start", "step": step, "params": params, "device": str(device), "resumes": resumes,
            "args": {k: str(v) for k, v in vars(args).items()}})
    loader = torch.utils.data.DataLoader(
        Batches(args.seed + 7919 * resumes, args.tokens,
                time.time() + args.short_first * (args.minutes * 60 - trained_s)),
        batch_size=None, num_workers=args.workers,
        prefetch_factor=4 if args.workers else None, persistent_workers=bool(args.workers),
        pin_memory=device.type == "cuda",
    )
    budget = args.minutes * 60
    last_save = time.perf_counter()
    started = time.perf_counter() - trained_s
    # Sums kept on the device and read every 25 steps: a read per step (.item(), a finite check) would make the host
    # wait for the GPU at every step instead of queueing the next one.
    loss_sum, region_sum, timeline_sum, updates, skipped = (torch.zeros((), device=device) for _ in range(5))
    sequences = 0
    waited = 0.0
    fetched = time.perf_counter()
    window, windows = None, []  # an open profiling window; the steps windows started at
    for batch in loader:
        waited += time.perf_counter() - fetched
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            break
        if window is not None and step == windows[-1] + 5:
            window.close()
            window = None
        if args.profile and window is None and len(windows) < 2 and (
                elapsed >= 0.7 * budget if windows else step >= 200):
            windows.append(step)
            window = ExitStack()
            window.enter_context(profile_to(args.out / "profile.txt", f"from step {step}", 5))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(elapsed / budget, args.lr)
        lm_loss, region_loss, timeline_loss, norm, finite = train_step(trainer, batch, args.region_weight,
                                                                       args.timeline_weight)
        loss_sum += torch.where(finite, lm_loss, 0.0)
        region_sum += torch.where(finite, region_loss, 0.0)
        timeline_sum += torch.where(finite, timeline_loss, 0.0)
        updates += finite
        skipped += ~finite
        step += 1
        sequences += batch["input_ids"].shape[0]
        if step % 25 == 0:
            blind = None
            if step % 100 == 0:  # does the language loss still depend on the frames? (blank frames, same batch)
                with torch.no_grad():
                    blind = round(losses(model, probes, blank_frames(batch), mean, std, device)[0].item(), 4)
            count = max(int(updates), 1)
            record({"step": step, "elapsed_s": round(elapsed, 1),
                    "loss": round(float(loss_sum) / count, 4), "region_loss": round(float(region_sum) / count, 4),
                    "timeline_loss": round(float(timeline_sum) / count, 4),
                    "last_loss": round(lm_loss.item(), 4), "last_loss_blank_frames": blind,
                    "lr": round(optimizer.param_groups[0]["lr"], 6), "grad_norm": round(float(norm), 3),
                    "batch": list(batch["input_ids"].shape), "sequences": sequences, "skipped": int(skipped),
                    "data_wait_s": round(waited, 1)})
            loss_sum.zero_(), region_sum.zero_(), timeline_sum.zero_(), updates.zero_()
        if time.perf_counter() - last_save > args.save_every * 60:
            torch.save({"model": model.state_dict(), "probes": probes.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step, "trained_s": time.perf_counter() - started, "resumes": resumes}, state_path)
            last_save = time.perf_counter()
        fetched = time.perf_counter()
    with torch.no_grad():  # the batch the time budget stopped at: not trained on
        seeing = losses(model, probes, batch, mean, std, device)[0].item()
        blind = losses(model, probes, blank_frames(batch), mean, std, device)[0].item()
    record({"event": "done", "step": step, "elapsed_s": round(time.perf_counter() - started, 1),
            "loss_with_frames": round(seeing, 4), "loss_with_blank_frames": round(blind, 4)})
    final = args.out / "final"
    model.set_attn_implementation({"vision_config": "sdpa"})  # the saved config names only stock attention
    model.eval().to(torch.float16).save_pretrained(final)
    processor.save_pretrained(final)
    size = sum(f.stat().st_size for f in final.glob("*.safetensors"))
    record({"event": "saved", "path": str(final), "mb": round(size / 1e6, 2)})


if __name__ == "__main__":
    main()
