"""Five questions about one video, asked one at a time and then together (stdcli.answer_questions): what a question
costs after the first, once the video has been read, encoded and prefilled.

    python scripts/bench_questions.py                 # the built-in model on the CPU, a generated clip, 64 frames
    python scripts/bench_questions.py --device cuda --frames 1920 --minutes 8 --inflate 7b   # at the 7B shape

Asked alone, every question pays for reading the video, the processor, the vision encoder and the prefill of its
whole prompt. Asked together, the first one does; each later one copies the cached prefix (the system prompt and
the video) and prefills only its own tokens. Both ways decode with the options `stdcli ask` has by default, and the
answers are checked to be identical. With --batch-size B the questions asked together are decoded B at a time (as
`stdcli ask --batch-size B` does). Prints, best of --rounds: the seconds of each question asked alone, what
questions 2-5 add when asked together (all five together, less question 1 alone), and the ratio "questions 2-5
together / question 1 alone", in wall-clock time and in this process's CPU time (steadier where other work shares
the cores).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from stdcli import AskOptions, VideoQuestions, answer_video, answer_videos, load_model
from stdcli.engine import DecodeOptions
from stdcli.inputs import FrameOptions
from stdcli.model.inflate import inflate_loaded
from stdcli.model.loading import pick_dtype
from stdcli.records import Record
from stdcli.world import generate_clip, questions_for, write_video

CLIP_SEED = 10_900_001  # a clip of the held-out range, never seen in training


def clocks() -> tuple[float, float]:
    """(wall-clock, CPU) seconds."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clocks()
    return now[0] - start[0], now[1] - start[1]


def together(lm, video: str, questions: list[str], options: AskOptions,
             batch_size: int) -> tuple[tuple[float, float], list[Record]]:
    """(wall-clock, CPU) seconds of the questions asked together, and their records in the questions' order."""
    records: list[Record] = []
    started = clocks()
    answer_videos(lm, [VideoQuestions(video, tuple(questions))], options, batch_size, records.append)
    seconds = since(started)
    return seconds, sorted(records, key=lambda r: questions.index(r.question))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=2.0, help="length of the generated clip (8 fps)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1, help="questions decoded at a time, asked together")
    parser.add_argument("--clip", type=Path, help="where the generated clip is kept: written if missing, else reused")
    parser.add_argument("--inflate", help="embed the model in a larger Qwen2-VL shape computing the same function "
                        "(7b: the built-in model at a 7B model's step cost; stdcli.model.inflate)")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    if args.inflate:
        small = load_model(args.model, device=args.device, dtype="float32")
        lm = inflate_loaded(small, args.inflate, pick_dtype(args.dtype, small.device))
    else:
        lm = load_model(args.model, device=args.device, dtype=args.dtype)
    clip = generate_clip(CLIP_SEED, "long", duration=args.minutes * 60)
    questions = list(dict.fromkeys(qa.question for qa in questions_for(clip, random.Random(CLIP_SEED))))
    questions = questions[: args.questions]
    options = AskOptions(questions[0], frames=FrameOptions(frames=args.frames), decode=DecodeOptions())
    with tempfile.TemporaryDirectory() as tmp:
        path = args.clip or Path(tmp) / "clip.mp4"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(clip, str(path), fps=8.0, size=(224, 224))
        video = str(path)
        answer_video(lm, video, options)  # warm-up: first allocations, the gamma policy's first costs
        alone: list[list[tuple[float, float]]] = [[] for _ in questions]
        later: list[tuple[float, float]] = []
        first_tokens: list[list[float]] = [[] for _ in questions]
        for _ in range(args.rounds):
            single = []
            for i, question in enumerate(questions):
                started = clocks()
                single.append(answer_video(lm, video, AskOptions(question, frames=options.frames)))
                alone[i].append(since(started))
            seconds, records = together(lm, video, questions, options, args.batch_size)
            later.append(seconds)
            assert all(r.ok for r in single + records), [r.error for r in single + records if not r.ok]
            assert [r.answer for r in records] == [r.answer for r in single], "answers differ"
            for i, r in enumerate(records):
                first_tokens[i].append(r.timings["first_token_s"])
        n = len(questions)
        shape = f" inflated to {args.inflate}" if args.inflate else ""
        print(f"{args.model}{shape} on {lm.device}, {args.frames} frames, {records[0].prompt_tokens} prompt tokens "
              f"({records[0].visual_tokens} visual), {n} questions, batch size {args.batch_size} together, best of "
              f"{args.rounds} rounds (wall-clock, CPU)")
        for i, question in enumerate(questions):
            wall, cpu = (min(t[c] for t in alone[i]) for c in (0, 1))
            print(f"  question {i + 1} alone: {wall:.3f} s, {cpu:.3f} s CPU  {records[i].new_tokens} tokens  "
                  f"{question!r}")
        firsts = ", ".join(f"{min(times):.3f}" for times in first_tokens[1:])
        print(f"  first token together: question 1 {min(first_tokens[0]):.3f} s, questions 2-{n} {firsts} s")
        for c, clock in enumerate(("wall-clock", "CPU")):
            first = min(t[c] for t in alone[0])
            rest_alone = sum(min(t[c] for t in times) for times in alone[1:])
            rest = min(t[c] for t in later) - first
            print(f"questions 2-{n} together / question 1 alone ({clock}): {rest / first:.2f}  "
                  f"({rest:.3f} s / {first:.3f} s; asked alone, questions 2-{n} take {rest_alone / first:.2f})")

if __name__ == "__main__":
    main()
