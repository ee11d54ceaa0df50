"""The built-in model's training script (scripts/train_builtin.py): its inputs are the inference path's, and a step
learns. The GPU run itself is in docs/model.md; these keep the script working between runs."""

import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import train_builtin as tb


@pytest.fixture(scope="module")
def trainer():
    torch.manual_seed(0)
    # check_against_processor runs inside: token expansion and pixel values equal the processor's
    return tb.Trainer.build(layers=2, lr=1e-3, seed=0, device=torch.device("cpu"))


def collated(trainer, examples):
    tokenizer = trainer.processor.tokenizer
    pad_id, video_id = (tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|video_pad|>"))
    return tb.collate(examples, pad_id, video_id, tb.rope_indexer(tokenizer))


@pytest.fixture(scope="module")
def batch(trainer):
    rng = random.Random(0)
    return collated(trainer, [tb.make_example(trainer.processor, seed, rng, long_share=0.0) for seed in (1, 2)])


def test_noise_only_on_flagged_frames_and_stays_in_pixel_range():
    frames = torch.full((4, 112, 112, 3), 128, dtype=torch.uint8)
    frames[1] = 0
    noisy = torch.tensor([True, True, False, False])
    out = tb.add_noise(frames, noisy)
    assert torch.equal(out[2:], frames[2:].float())
    assert not torch.equal(out[0], frames[0].float())
    assert out.min() >= 0 and out.max() <= 255 and torch.equal(out, out.round())


def test_region_targets_mark_which_way_a_moving_object_goes():
    seed = next(s for s in range(200) if [e.kind for e in tb.generate_clip(s, "short").events] == ["move"])
    clip = tb.generate_clip(seed, "short")
    move = clip.events[0]
    timestamps = tb.sample_timestamps(clip.duration, 2.0)
    targets = tb.region_targets(clip, timestamps).view(len(timestamps) // 2, -1, tb.LOOKS + len(tb.MOTION))
    motion = targets[..., tb.LOOKS :]
    assert motion.sum(1).nonzero()[:, 1].unique().tolist() == [tb.MOTION.index(move.direction)]
    for g in range(len(timestamps) // 2):
        during = timestamps[2 * g] < move.end and timestamps[2 * g + 1] > move.time
        assert bool(motion[g].any()) == during
    # only where the object is
    assert not (motion.amax(-1) > targets[..., : tb.LOOKS].amax(-1)).any()


def test_timeline_targets_count_frame_pairs_and_mark_each_event_where_and_when_it_happens():
    seed = next(s for s in range(200) if [e.kind for e in tb.generate_clip(s, "short").events] == ["change_color"])
    clip = tb.generate_clip(seed, "short")
    change = clip.events[0]
    timestamps = tb.sample_timestamps(clip.duration, 2.0)
    groups = len(timestamps) // 2
    targets = tb.timeline_targets(clip, timestamps).view(groups, tb.GRID * tb.GRID, -1)
    index = torch.log1p(torch.arange(groups, dtype=torch.float32))
    assert torch.allclose(targets[:, :, 0], index[:, None].expand(-1, tb.GRID * tb.GRID))
    events = targets[..., 1:]
    assert events.sum(1).nonzero()[:, 1].unique().tolist() == [tb.EVENT_KINDS.index("change_color")]
    for g in range(groups):
        since = timestamps[2 * g - 1] if g else -1.0
        assert bool(events[g].any()) == (since < change.end and timestamps[2 * g + 1] > change.time)
    # at the object's place: where its region targets are
    regions = tb.region_targets(clip, timestamps).view(groups, tb.GRID * tb.GRID, -1)
    marked = events.amax(-1) > 0
    assert marked.any() and not (marked & (regions[..., : tb.LOOKS].amax(-1) == 0)).any()


def test_pixel_values_take_float_frames_like_uint8(batch, trainer):
    frames = batch["frames"][:2]
    assert torch.equal(tb.pixel_values(frames, trainer.mean, trainer.std),
                       tb.pixel_values(frames.float(), trainer.mean, trainer.std))


def test_batch_layout(batch):
    rows, length = batch["input_ids"].shape
    assert rows == 2 and batch["position_ids"].shape == (3, rows, length)
    assert batch["frames"].shape[1:] == (112, 112, 3) and batch["noisy"].shape == batch["frames"].shape[:1]
    visual_tokens = int((batch["mm_token_type_ids"] == 2).sum())
    assert visual_tokens == batch["regions"].shape[0] == int(batch["video_grid_thw"].prod(-1).sum()) // 4
    assert batch["timeline"].shape == (visual_tokens, 1 + len(tb.EVENT_KINDS))
    assert (batch["weights"] > 0).sum() == (batch["labels"] != -100).sum()


def test_each_branch_sees_what_a_lone_question_sees(trainer):
    """A question's branch gets the logits it would get asked alone after the video (float32): no answer can be
    copied from another question of the same clip."""
    rng = random.Random(3)
    example = tb.make_example(trainer.processor, 5, rng, long_share=0.0)
    batch = collated(trainer, [example])
    video_id = trainer.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    model = trainer.model.eval()
    pixels = tb.pixel_values(batch["frames"], trainer.mean, trainer.std)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                       pixel_values_videos=pixels, video_grid_thw=batch["video_grid_thw"],
                       position_ids=batch["position_ids"], attention_mask=tb.branch_mask(batch["branches"])).logits
        branches = torch.tensor(example.branches)
        assert int(branches.max()) >= 5
        for k in (1, 3, int(branches.max())):
            keep = (branches == 0) | (branches == k)
            ids = torch.tensor(example.ids)[keep][None]
            alone = model(input_ids=ids, mm_token_type_ids=(ids == video_id).long() * 2, pixel_values_videos=pixels,
                          video_grid_thw=batch["video_grid_thw"]).logits
            torch.testing.assert_close(packed[0, : len(example.ids)][keep], alone[0], atol=1e-4, rtol=1e-4)
    model.train()


def test_steps_learn_on_one_batch(batch, trainer):
    first = None
    for _ in range(6):
        lm_loss, region_loss, timeline_loss, norm, finite = tb.train_step(trainer, batch, region_weight=1.0,
                                                                          timeline_weight=1.0)
        assert bool(finite) and torch.isfinite(norm)
        first = first if first is not None else (float(lm_loss), float(region_loss), float(timeline_loss))
    assert float(lm_loss) < first[0] and float(region_loss) < first[1] and float(timeline_loss) < first[2]
    with torch.no_grad():
        blank = tb.losses(trainer.model, trainer.probes, tb.blank_frames(batch), trainer.mean, trainer.std,
                          trainer.device)[0]
    assert torch.isfinite(blank)
