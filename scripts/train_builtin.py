"""Train the built-in Video-LLM: a small Qwen2-VL on clips of the generated world (stdcli.world).

    python scripts/train_builtin.py --out runs/builtin --minutes 7            # one H100/H200
    python scripts/train_builtin.py --out runs/builtin --minutes 7 --resume   # continue after an interruption

Seeded and resumable (a checkpoint every --save-every minutes holds model, optimizer, step and time). Frames go
through exactly the inference path: rendered at the samples' 224x224, sampled at the timestamps `sample_frames`
would pick in an 8 fps video (2 fps, even count, linspace indices), then the model's own processor. Each clip is
one multi-turn conversation of several questions; the loss is on the answers (and their <|im_end|>) only.
Writes OUT/train.log (JSON lines), OUT/final/ (the checkpoint, float16 safetensors).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import InterpolationMode, resize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stdcli.attention import use_packed_vision_attention  # noqa: E402
from stdcli.build import build_random_model, make_config, make_processor, make_tokenizer  # noqa: E402
from stdcli.video import choose_frame_count, target_indices  # noqa: E402
from stdcli.world import QA, corpus, describe, generate_clip, questions_for, render_frames  # noqa: E402

SOURCE_FPS = 8.0  # the samples are written at 8 fps
FRAME_EDGE = 224  # the samples' frame size; the processor resizes to 112
MODEL_EDGE = 112
MODEL_PIXELS = MODEL_EDGE * MODEL_EDGE
TRAIN_SEED_BASE = 0  # training clips use seeds below EVAL_SEED_BASE
EVAL_SEED_BASE = 10_000_000

BUILTIN_TEXT = {
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 6,
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


def builtin_config(tokenizer):
    return make_config(
        "qwen2-vl", "tiny", tokenizer=tokenizer, text_config=BUILTIN_TEXT, vision_config=BUILTIN_VISION,
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
    """uint8 [T, 3, 112, 112]: rendered at 224 and resized like the processor does (realistic), or drawn at 112."""
    if not realistic:
        return torch.from_numpy(render_frames(clip, timestamps, MODEL_EDGE)).permute(0, 3, 1, 2).contiguous()
    frames = torch.from_numpy(render_frames(clip, timestamps, FRAME_EDGE)).permute(0, 3, 1, 2)
    return resize(frames, [MODEL_EDGE, MODEL_EDGE], interpolation=InterpolationMode.BICUBIC, antialias=True)


def pixel_values(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The Qwen2-VL video processor's rescale, normalize and patchify, for frames already at 112x112.

    frames uint8 [T, 3, 112, 112] (T even) -> [T/2 * 8 * 8, 3 * 2 * 14 * 14], patches in the processor's order.
    """
    x = (frames.float() / 255 - mean[:, None, None]) / std[:, None, None]
    t, c = x.shape[0] // 2, x.shape[1]
    g = MODEL_EDGE // 14
    x = x.view(t, 2, c, g // 2, 2, 14, g // 2, 2, 14)
    return x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * g * g, c * 2 * 14 * 14)


class Conversation:
    """Token ids, labels and frames of one clip's multi-turn conversation."""

    def __init__(self, tokenizer, prompt: str, frames: torch.Tensor, qas: list[QA]):
        tokens = (frames.shape[0] // 2) * (MODEL_EDGE // 28) ** 2
        pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        ids = []
        for token in tokenizer(prompt, add_special_tokens=False).input_ids:  # expanded as the processor does
            ids += [token] * (tokens if token == pad else 1)
        labels = [-100] * len(ids)
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        for i, qa in enumerate(qas):
            answer = tokenizer(qa.answer, add_special_tokens=False).input_ids + [end]
            ids += answer
            labels += answer
            if i + 1 < len(qas):
                turn = f"\n<|im_start|>user\n{qas[i + 1].question}<|im_end|>\n<|im_start|>assistant\n"
                sep = tokenizer(turn, add_special_tokens=False).input_ids
                ids += sep
                labels += [-100] * len(sep)
        self.ids, self.labels, self.frames = ids, labels, frames


def make_example(processor, seed: int, rng: random.Random, long_share: float = 0.2) -> Conversation:
    kind = "long" if rng.random() < long_share else "short"
    clip = generate_clip(seed, kind)
    fps = 2.0 if rng.random() < 0.8 else rng.uniform(1.0, 3.0)
    frames = model_frames(clip, sample_timestamps(clip.duration, fps), realistic=kind == "short" and rng.random() < 0.4)
    if rng.random() < 0.5:  # mild sensor/codec noise so decoded H.264 frames look familiar
        noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(seed)) * 2.0
        frames = (frames + noise).round().clamp(0, 255).to(torch.uint8)
    qas = questions_for(clip, rng)
    rng.shuffle(qas)
    describe_qa = [q for q in qas if q.qtype == "describe"]
    others = [q for q in qas if q.qtype != "describe"]
    chosen = others[: rng.randint(2, 4)]
    if describe_qa and rng.random() < 0.6:
        chosen.insert(rng.randrange(len(chosen) + 1), describe_qa[0])
    chosen = chosen or qas[:1]
    return Conversation(processor.tokenizer, first_turn(processor, chosen[0].question), frames, chosen)


def collate(examples: list[Conversation], pad_id: int, video_id: int) -> dict[str, torch.Tensor]:
    length = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
    g = MODEL_EDGE // 14
    # No attention mask: padding is on the right, so causal attention never lets a real token see a pad, and
    # without a mask SDPA runs its flash kernel instead of materializing [B, H, L, L] scores.
    return {
        "input_ids": ids,
        "labels": labels,
        "mm_token_type_ids": (ids == video_id).long() * 2,
        "frames": torch.cat([e.frames for e in examples]),
        "video_grid_thw": torch.tensor([[e.frames.shape[0] // 2, g, g] for e in examples]),
    }


class Batches(torch.utils.data.IterableDataset):
    """Endless batches of at most `tokens` padded tokens; each worker draws its own clip seeds.

    Examples wait in a pool and leave it longest first, so a batch holds examples of similar length. Until the
    wall-clock time `short_until`, clips are short only: the vision tower learns to see on cheap examples first.
    """

    POOL = 96

    def __init__(self, seed: int, tokens: int, short_until: float):
        self.seed, self.tokens, self.short_until = seed, tokens, short_until

    def __iter__(self):
        torch.set_num_threads(1)
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        processor = builtin_processor(builtin_tokenizer())
        pad_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
        rng = random.Random(self.seed * 1000 + worker)
        clip_seed = TRAIN_SEED_BASE + self.seed * 1_000_000 + worker
        pool: list[Conversation] = []
        while True:
            while len(pool) < self.POOL:
                long_share = 0.0 if time.time() < self.short_until else 0.25
                pool.append(make_example(processor, clip_seed, rng, long_share))
                clip_seed += workers
            pool.sort(key=lambda e: len(e.ids))
            count = max(1, min(len(pool), self.tokens // len(pool[-1].ids)))
            batch, pool = pool[-count:], pool[:-count]
            yield collate(batch, pad_id, video_id)


def check_against_processor(processor) -> None:
    """Our token expansion and pixel values must equal the processor's (the inference path)."""
    clip = generate_clip(1, "short")
    timestamps = sample_timestamps(clip.duration, 2.0)
    qa = questions_for(clip, random.Random(1))[0]
    prompt = first_turn(processor, qa.question)
    reference = processor(
        text=[prompt], videos=[render_frames(clip, timestamps, FRAME_EDGE)], return_tensors="pt",
        videos_kwargs={"do_sample_frames": False},
    )
    ours = Conversation(processor.tokenizer, prompt, model_frames(clip, timestamps, realistic=True), [qa])
    mean = torch.tensor(processor.video_processor.image_mean)
    std = torch.tensor(processor.video_processor.image_std)
    assert ours.ids[: reference["input_ids"].shape[1]] == reference["input_ids"][0].tolist(), "token ids differ"
    error = (pixel_values(ours.frames, mean, std) - reference["pixel_values_videos"]).abs().max().item()
    assert error < 1e-4, f"pixel values differ by {error}"


def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    if progress < warmup:
        return peak * progress / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/builtin"))
    parser.add_argument("--minutes", type=float, default=7.0, help="training time budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=48_000, help="padded tokens per batch")
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--short-first", type=float, default=0.35, help="share of the time on short clips only")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--save-every", type=float, default=2.0, help="minutes between checkpoints")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)

    tokenizer = builtin_tokenizer()
    processor = builtin_processor(tokenizer)
    check_against_processor(processor)
    model = build_random_model("qwen2-vl", builtin_config(tokenizer), seed=args.seed, device=str(device)).train()
    use_packed_vision_attention(model)
    mean = torch.tensor(processor.video_processor.image_mean, device=device)
    std = torch.tensor(processor.video_processor.image_std, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.05)
    step, trained_s, resumes = 0, 0.0, 0
    state_path = args.out / "state.pt"
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
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
        Batches(args.seed + 7919 * resumes, args.tokens, time.time() + args.short_first * (args.minutes * 60 - trained_s)),
        batch_size=None, num_workers=args.workers,
        prefetch_factor=4 if args.workers else None, persistent_workers=bool(args.workers),
    )
    budget = args.minutes * 60
    last_save = time.perf_counter()
    started = time.perf_counter() - trained_s
    window: list[float] = []
    sequences = skipped = 0
    waited = 0.0
    fetched = time.perf_counter()
    for batch in loader:
        waited += time.perf_counter() - fetched
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(elapsed / budget, args.lr)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        batch["pixel_values_videos"] = pixel_values(batch.pop("frames"), mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if torch.isfinite(loss) and torch.isfinite(norm):
            optimizer.step()
            window.append(loss.item())
        else:  # a rare bf16 overflow must not poison the weights
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        step += 1
        sequences += batch["input_ids"].shape[0]
        if step % 25 == 0:
            record({"step": step, "elapsed_s": round(elapsed, 1),
                    "loss": round(sum(window) / len(window), 4) if window else None,
                    "lr": round(optimizer.param_groups[0]["lr"], 6), "grad_norm": round(float(norm), 3),
                    "batch": list(batch["input_ids"].shape), "sequences": sequences, "skipped": skipped,
                    "data_wait_s": round(waited, 1)})
            window.clear()
        if time.perf_counter() - last_save > args.save_every * 60:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "trained_s": time.perf_counter() - started, "resumes": resumes}, state_path)
            last_save = time.perf_counter()
        fetched = time.perf_counter()
    batch = {k: v.to(device) for k, v in batch.items()}  # the batch the time budget stopped at: not trained on
    frames = batch.pop("frames")
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        batch["pixel_values_videos"] = pixel_values(frames, mean, std)
        seeing = model(**batch).loss.item()
        batch["pixel_values_videos"] = pixel_values(torch.zeros_like(frames), mean, std)
        blind = model(**batch).loss.item()
    record({"event": "done", "step": step, "elapsed_s": round(time.perf_counter() - started, 1),
            "loss_with_frames": round(seeing, 4), "loss_with_blank_frames": round(blind, 4)})
    final = args.out / "final"
    model.set_attn_implementation({"vision_config": "sdpa"})  # the saved config names only stock attention
    model.eval().to(torch.float16).save_pretrained(final)
    processor.save_pretrained(final)
    record({"event": "saved", "path": str(final), "mb": round(sum(f.stat().st_size for f in final.glob("*.safetensors")) / 1e6, 2)})


if __name__ == "__main__":
    main()
