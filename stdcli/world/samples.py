"""The clips of samples/: which seeds of the generated world they are, so that scripts can rebuild them exactly
(scripts/make_samples.py writes them; scripts/eval_builtin.py --samples checks the model on them)."""

from __future__ import annotations

HELD_OUT = 10_000_000
SAMPLE_FPS = 8.0
SAMPLE_SIZE = 224
# (file, seed, kind, duration or None for the seed's own). Picked so that the short clips show every event kind
# (appear, disappear, move, bounce, change_color) over 5-20 s, and the long one is 2.5 minutes of near-stillness
# (slow drift) around a single colour change at 94 s.
SAMPLE_CLIPS = (
    ("short_1.mp4", 10_000_000, "short", None),  # red circle turns purple, then a square appears
    ("short_2.mp4", 10_000_002, "short", None),  # a circle moves up, then disappears
    ("short_3.mp4", 10_000_004, "short", None),  # a triangle bounces, then turns purple
    ("short_4.mp4", 10_000_009, "short", None),  # bounce, appear, disappear
    ("short_5.mp4", 10_000_010, "short", None),  # 5 s: one move
    ("long_1.mp4", 10_000_001, "long", 150.0),  # one colour change in two and a half minutes
)
