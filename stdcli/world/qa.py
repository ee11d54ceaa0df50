"""Questions and answers about clips, the reference description, and answer checking.

Objects are named by what they look like: "[size] color shape", with the size only where another object of the
same shape exists (the generator keeps (shape, size) unique in a clip, so names never clash), and the color the
object has when the named event starts. An appearing object is always introduced with its size.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations

from .scene import COLORS, SHAPES, SIZES, Clip, Event, object_state_at

QUESTION_TYPES = ("describe", "color", "shape", "count", "direction", "order", "when")
# Questions of each type (describe excepted) that questions_for picks per clip, when that many apply.
QUESTIONS_PER_TYPE = 2

EDGE = {"left": "left", "right": "right", "up": "top", "down": "bottom"}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Thirds of a clip; "when" is asked only when the whole event lies in one third, 5% of the clip away from its borders.
WHEN_ANSWERS = ("Near the start.", "In the middle.", "Near the end.")
WHEN_MARGIN = 0.05

DESCRIBE = (
    "What happens?",
    "What happens in the video?",
    "Describe the video.",
    "What is going on?",
    "Describe what happens.",
    "What happens in this clip?",
)
COLOR_OF_OBJECT = (
    "What color is the {obj}?",
    "Which color is the {obj}?",
    "What is the color of the {obj}?",
    "What color does the {obj} have?",
)
COLOR_AT_START = (
    "What color is the {obj} at the start?",
    "What color is the {obj} at first?",
    "What color is the {obj} at the beginning?",
)
COLOR_AT_END = (
    "What color is the {obj} at the end?",
    "What color is the {obj} in the end?",
    "What color is the {obj} at the end of the video?",
)
COLOR_TURNS = (
    "What color does the {ref} turn?",
    "What color does the {ref} change to?",
    "What color does the {ref} become?",
    "The {ref} turns what color?",
)
COLOR_APPEARING = (
    "What color is the shape that appears?",
    "What color is the new shape?",
    "Which color is the shape that appears?",
)
COLOR_DISAPPEARING = (
    "What color is the shape that disappears?",
    "Which color is the shape that vanishes?",
    "What color is the shape that goes away?",
)
SHAPE_OF_COLOR = (
    "What shape is the {color} object?",
    "What shape is the {color} one?",
    "Which shape is {color}?",
    "What is the shape of the {color} object?",
)
SHAPE_APPEARS = ("What shape appears?", "Which shape appears?", "What kind of shape appears?", "What shape shows up?")
SHAPE_DISAPPEARS = ("What shape disappears?", "Which shape disappears?", "What shape vanishes?")
SHAPE_MOVES = ("Which shape moves?", "What shape moves?", "What kind of shape moves?")
SHAPE_BOUNCES = ("Which shape bounces?", "What shape bounces?", "What kind of shape bounces?")
SHAPE_CHANGES = ("Which shape changes color?", "What shape changes color?", "What kind of shape changes color?")
SHAPE_TURNS = ("Which shape turns {color}?", "What shape becomes {color}?", "What shape changes to {color}?")
COUNT_ALL = (
    "How many shapes are in the video?",
    "How many shapes are there?",
    "How many objects are there in total?",
    "How many objects are in the video?",
    "Count the shapes.",
)
COUNT_KIND = ("How many {shapes} are there?", "How many {shapes} are in the video?", "How many {shapes} do you see?")
COUNT_COLOR = (
    "How many {color} shapes are there?",
    "How many {color} objects are in the video?",
    "How many shapes are {color}?",
)
COUNT_COLOR_AT_START = ("How many {color} shapes are there at the start?", "How many shapes are {color} at the start?")
COUNT_COLOR_AT_END = ("How many {color} shapes are there at the end?", "How many shapes are {color} at the end?")
COUNT_AT_START = (
    "How many shapes are there at the start?",
    "How many shapes are visible at the start?",
    "How many shapes do you see at first?",
)
COUNT_AT_END = (
    "How many shapes are there at the end?",
    "How many shapes are visible at the end?",
    "How many shapes are left at the end?",
)
DIRECTION_MOVE = (
    "Which way does the {ref} move?",
    "In which direction does the {ref} move?",
    "Which direction does the {ref} go?",
    "Where does the {ref} move?",
)
DIRECTION_BOUNCE = (
    "Which edge does the {ref} bounce off?",
    "Off which edge does the {ref} bounce?",
    "Where does the {ref} bounce?",
    "Which side does the {ref} bounce off?",
)
# {a_q}: "the red circle turn green" (after "does"); {a_s}, {b_s}: "the red circle turns green".
ORDER_BEFORE_OR_AFTER = (
    "Does {a_q} before or after {b_s}?",
    "Is it before or after {b_s} that {a_s}?",
    "Compared to when {b_s}, does {a_q} before or after?",
)
ORDER_FIRST = (
    "What happens first: {a_s} or {b_s}?",
    "Which happens first, {a_s} or {b_s}?",
    "Which comes first: {a_s} or {b_s}?",
)
ORDER_LAST = (
    "What happens last: {a_s} or {b_s}?",
    "Which happens later, {a_s} or {b_s}?",
    "Which comes second: {a_s} or {b_s}?",
)
ORDER_IS_BEFORE = ("Does {a_q} before {b_s}?", "Is it true that {a_s} before {b_s}?")
ORDER_IS_AFTER = ("Does {a_q} after {b_s}?", "Is it true that {a_s} after {b_s}?")
WHEN = (
    "When does {a_q}?",
    "At what point does {a_q}?",
    "When in the video does {a_q}?",
    "Does {a_q} near the start, in the middle, or near the end?",
)

TEMPLATES: dict[str, tuple[tuple[str, ...], ...]] = {
    "describe": (DESCRIBE,),
    "color": (COLOR_OF_OBJECT, COLOR_AT_START, COLOR_AT_END, COLOR_TURNS, COLOR_APPEARING, COLOR_DISAPPEARING),
    "shape": (SHAPE_OF_COLOR, SHAPE_APPEARS, SHAPE_DISAPPEARS, SHAPE_MOVES, SHAPE_BOUNCES, SHAPE_CHANGES, SHAPE_TURNS),
    "count": (
        COUNT_ALL, COUNT_KIND, COUNT_COLOR, COUNT_COLOR_AT_START, COUNT_COLOR_AT_END, COUNT_AT_START, COUNT_AT_END
    ),
    "direction": (DIRECTION_MOVE, DIRECTION_BOUNCE),
    "order": (ORDER_BEFORE_OR_AFTER, ORDER_FIRST, ORDER_LAST, ORDER_IS_BEFORE, ORDER_IS_AFTER),
    "when": (WHEN,),
}


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    qtype: str


# ---------------------------------------------------------------------------------------------------------------------
# Naming objects and events
# ---------------------------------------------------------------------------------------------------------------------


def _shape_shared(clip: Clip, obj: int) -> bool:
    shape = clip.objects[obj].shape
    return any(o.shape == shape for i, o in enumerate(clip.objects) if i != obj)


def object_phrase(clip: Clip, obj: int, color: str | None = None, with_size: bool = False) -> str:
    """"[size] [color] shape": the size where it is needed to tell the object apart, or asked for."""
    o = clip.objects[obj]
    words = [o.size] if with_size or _shape_shared(clip, obj) else []
    return " ".join(words + ([color] if color else []) + [o.shape])


def event_subject(clip: Clip, event: Event) -> str:
    return object_phrase(clip, event.obj, event.color_before, with_size=event.kind == "appear")


def event_predicate(event: Event, base_form: bool = False) -> str:
    """"turns green" (or "turn green" after "does")."""
    verb = {"appear": "appear", "disappear": "disappear", "move": "move", "bounce": "bounce", "change_color": "turn"}
    word = verb[event.kind] + ("" if base_form else "s")
    if event.kind == "move":
        return f"{word} {event.direction}"
    if event.kind == "bounce":
        return f"{word} off the {EDGE[event.direction]} edge"
    if event.kind == "change_color":
        return f"{word} {event.color_after}"
    return word


def event_clause(clip: Clip, event: Event) -> str:
    """"the red circle turns green"."""
    return f"the {event_subject(clip, event)} {event_predicate(event)}"


def _event_question_form(clip: Clip, event: Event) -> str:
    """"the red circle turn green", to follow "does"."""
    return f"the {event_subject(clip, event)} {event_predicate(event, base_form=True)}"


def _sentence(clause: str) -> str:
    return clause[0].upper() + clause[1:] + "."


def describe_event(clip: Clip, event: Event, first: bool) -> str:
    """One sentence of describe(): a new object is introduced with "a", known ones with "the"."""
    article = "a" if event.kind == "appear" else "the"
    clause = f"{article} {event_subject(clip, event)} {event_predicate(event)}"
    return _sentence(clause if first else "then " + clause)


def describe(clip: Clip) -> str:
    """The reference answer to "What happens?": one sentence per event, in order."""
    return " ".join(describe_event(clip, e, first=i == 0) for i, e in enumerate(clip.events))


# ---------------------------------------------------------------------------------------------------------------------
# Checking answers
# ---------------------------------------------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the"}


def normalize_answer(s: str) -> str:
    """Lower case, words only, no articles, digits spelled out: "The 3 Squares!" -> "three squares"."""
    words = re.findall(r"[a-z0-9]+", s.lower())
    spelled = [NUMBER_WORDS[int(w)] if w.isdigit() and int(w) < len(NUMBER_WORDS) else w for w in words]
    return " ".join(w for w in spelled if w not in _ARTICLES)


_VERBS = {
    "appear": ("appear", "appears", "appeared", "emerges", "emerge"),
    "disappear": ("disappear", "disappears", "disappeared", "vanish", "vanishes", "vanished"),
    "move": ("move", "moves", "moved", "goes", "go", "went", "slides", "slide", "slid", "travels", "travel"),
    "bounce": ("bounce", "bounces", "bounced"),
    "change_color": ("turn", "turns", "turned", "becomes", "become", "became", "changes", "change", "changed"),
}
_VERB_KIND = {word: kind for kind, words in _VERBS.items() for word in words}
_DIRECTION_WORDS = {
    "left": "left", "leftward": "left", "leftwards": "left",
    "right": "right", "rightward": "right", "rightwards": "right",
    "up": "up", "upward": "up", "upwards": "up", "top": "up",
    "down": "down", "downward": "down", "downwards": "down", "bottom": "down",
}  # fmt: skip
_SHAPE_WORDS = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURAL.items()}}
# Where one event's clause ends and the next one's begins.
_CLAUSE_BREAK = re.compile(r"[.;,!?]|\b(?:and then|after that|afterwards|then|and|next|finally|later)\b")


@dataclass(frozen=True)
class _Said:
    """One event as read from free text."""

    kind: str
    shape: str
    size: str | None
    color: str | None
    detail: str | None  # direction (move, bounce) or new color (change_color)


def _parse_clause(words: list[str], previous: _Said | None) -> _Said | None:
    """The event a clause states; a clause without a subject ("and then turns green") is about the previous one."""
    verb_at = next(i for i, w in enumerate(words) if w in _VERB_KIND)
    kind = _VERB_KIND[words[verb_at]]
    before, after = words[:verb_at], words[verb_at + 1 :]
    shapes = [_SHAPE_WORDS[w] for w in before if w in _SHAPE_WORDS]
    colors = [w for w in before if w in COLORS]
    sizes = [w for w in before if w in SIZES]
    if len(shapes) > 1 or len(colors) > 1 or len(sizes) > 1:
        return None
    if shapes:
        shape, size, color = shapes[0], (sizes or [None])[0], (colors or [None])[0]
    elif previous is not None and not colors and not sizes:
        shape, size = previous.shape, previous.size
        color = previous.detail if previous.kind == "change_color" else previous.color
    else:
        return None
    detail = None
    if kind in ("move", "bounce"):
        directions = {_DIRECTION_WORDS[w] for w in after if w in _DIRECTION_WORDS}
        if len(directions) != 1:
            return None
        detail = directions.pop()
    elif kind == "change_color":
        new_colors = [w for w in after if w in COLORS]
        if "from" in after and len(new_colors) == 2 and color in (None, new_colors[0]):  # "turns from red to green"
            color, new_colors = new_colors[0], new_colors[1:]
        if len(new_colors) != 1:
            return None
        detail = new_colors[0]
    return _Said(kind, shape, size, color, detail)


def parse_description(text: str) -> list[_Said] | None:
    """Events stated by a free-text answer, in order; None when a clause cannot be read as one event."""
    said: list[_Said] = []
    for part in _CLAUSE_BREAK.split(text.lower()):
        words = re.findall(r"[a-z]+", part)
        if not any(w in _VERB_KIND for w in words):
            if any(w in _SHAPE_WORDS or w in COLORS or w in _DIRECTION_WORDS for w in words):
                return None  # content that states no event, e.g. "There is a red circle."
            continue
        event = _parse_clause(words, said[-1] if said else None)
        if event is None:
            return None
        said.append(event)
    return said


def _matches(said: _Said, clip: Clip, event: Event) -> bool:
    o = clip.objects[event.obj]
    detail = event.color_after if event.kind == "change_color" else event.direction
    return (
        said.kind == event.kind
        and said.shape == o.shape
        and said.size in (None, o.size)
        and said.color == event.color_before
        and said.detail == detail
    )


def check_description(text: str, clip: Clip) -> bool:
    """Whether free text states exactly the clip's events, in order (size words may be left out)."""
    said = parse_description(text)
    return (
        said is not None
        and len(said) == len(clip.events)
        and all(_matches(s, clip, e) for s, e in zip(said, clip.events, strict=True))
    )


def is_correct(qa: QA, predicted: str, clip: Clip) -> bool:
    if qa.qtype == "describe":
        return check_description(predicted, clip)
    return normalize_answer(predicted) == normalize_answer(qa.answer)


# ---------------------------------------------------------------------------------------------------------------------
# Ground truth used by the questions
# ---------------------------------------------------------------------------------------------------------------------


def _events_of(clip: Clip, kind: str) -> list[Event]:
    return [e for e in clip.events if e.kind == kind]


def _colors_ever(clip: Clip, obj: int) -> set[str]:
    return {clip.objects[obj].color} | {e.color_after for e in _events_of(clip, "change_color") if e.obj == obj}


def _visible_colors_at(clip: Clip, t: float) -> list[str]:
    """Colors of the objects visible at t, one per object."""
    states = (object_state_at(clip, i, t) for i in range(len(clip.objects)))
    return [color for visible, _, _, color in states if visible]


def _third(clip: Clip, event: Event) -> int | None:
    """0, 1 or 2 when the whole event lies in that third of the clip, clear of the borders between thirds."""
    third, margin = clip.duration / 3, WHEN_MARGIN * clip.duration
    for k in range(3):
        low = k * third + (margin if k > 0 else -1.0)
        high = (k + 1) * third - (margin if k < 2 else -1.0)
        if low <= event.time and event.end <= high:
            return k
    return None


def _unique_clause_events(clip: Clip) -> list[Event]:
    """Events that their clause names without doubt (no other event reads the same)."""
    clauses = [event_clause(clip, e) for e in clip.events]
    return [e for e, c in zip(clip.events, clauses, strict=True) if clauses.count(c) == 1]


def _number(n: int) -> str:
    return NUMBER_WORDS[n].capitalize() + "."


def _a_shape(clip: Clip, obj: int) -> str:
    return f"A {clip.objects[obj].shape}."


# ---------------------------------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Intent:
    """One question with its answer, askable with any of its templates."""

    templates: tuple[str, ...]
    answer: str
    fill: tuple[tuple[str, str], ...] = ()

    def ask(self, rng: random.Random, qtype: str) -> QA:
        return QA(rng.choice(self.templates).format(**dict(self.fill)), self.answer, qtype)


def _color_intents(clip: Clip, rng: random.Random) -> list[_Intent]:
    intents = []
    changes = _events_of(clip, "change_color")
    for i in range(len(clip.objects)):
        obj = (("obj", object_phrase(clip, i)),)
        own = [e for e in changes if e.obj == i]
        if not own:
            intents.append(_Intent(COLOR_OF_OBJECT, clip.objects[i].color.capitalize() + ".", obj))
            continue
        visible_start, _, _, color_start = object_state_at(clip, i, 0.0)
        visible_end, _, _, color_end = object_state_at(clip, i, clip.duration)
        if visible_start:
            intents.append(_Intent(COLOR_AT_START, color_start.capitalize() + ".", obj))
        if visible_end:
            intents.append(_Intent(COLOR_AT_END, color_end.capitalize() + ".", obj))
        befores = [e.color_before for e in own]
        for e in own:
            if befores.count(e.color_before) == 1:
                ref = (("ref", object_phrase(clip, i, e.color_before)),)
                intents.append(_Intent(COLOR_TURNS, e.color_after.capitalize() + ".", ref))
    for kind, templates in (("appear", COLOR_APPEARING), ("disappear", COLOR_DISAPPEARING)):
        events = _events_of(clip, kind)
        if len(events) == 1:
            intents.append(_Intent(templates, events[0].color_before.capitalize() + "."))
    return intents


def _shape_intents(clip: Clip, rng: random.Random) -> list[_Intent]:
    intents = []
    for color in COLORS:
        holders = [i for i in range(len(clip.objects)) if color in _colors_ever(clip, i)]
        if len(holders) == 1:
            intents.append(_Intent(SHAPE_OF_COLOR, _a_shape(clip, holders[0]), (("color", color),)))
    for kinds, templates in (
        (("appear",), SHAPE_APPEARS),
        (("disappear",), SHAPE_DISAPPEARS),
        (("move", "bounce"), SHAPE_MOVES),
        (("bounce",), SHAPE_BOUNCES),
        (("change_color",), SHAPE_CHANGES),
    ):
        actors = {e.obj for e in clip.events if e.kind in kinds}
        if len(actors) == 1:
            intents.append(_Intent(templates, _a_shape(clip, actors.pop())))
    changes = _events_of(clip, "change_color")
    new_colors = [e.color_after for e in changes]
    for e in changes:
        if new_colors.count(e.color_after) == 1:
            intents.append(_Intent(SHAPE_TURNS, _a_shape(clip, e.obj), (("color", e.color_after),)))
    return intents


def _present_and_one_absent(rng: random.Random, everything: tuple[str, ...], present: set[str]) -> list[str]:
    """Values to count: those present, plus one absent value (answer "Zero.") when there is one."""
    absent = [v for v in everything if v not in present]
    return sorted(present) + ([rng.choice(absent)] if absent else [])


def _count_intents(clip: Clip, rng: random.Random) -> list[_Intent]:
    """Counting means distinct objects ever visible; "at the start"/"at the end" mean the first/last frame."""
    intents = [_Intent(COUNT_ALL, _number(len(clip.objects)))]
    shapes = [o.shape for o in clip.objects]
    for shape in _present_and_one_absent(rng, SHAPES, set(shapes)):
        intents.append(_Intent(COUNT_KIND, _number(shapes.count(shape)), (("shapes", PLURAL[shape]),)))
    at_start, at_end = _visible_colors_at(clip, 0.0), _visible_colors_at(clip, clip.duration)
    intents += [_Intent(COUNT_AT_START, _number(len(at_start))), _Intent(COUNT_AT_END, _number(len(at_end)))]
    if not _events_of(clip, "change_color"):
        colors = [o.color for o in clip.objects]
        for color in _present_and_one_absent(rng, COLORS, set(colors)):
            intents.append(_Intent(COUNT_COLOR, _number(colors.count(color)), (("color", color),)))
        return intents
    for templates, colors in ((COUNT_COLOR_AT_START, at_start), (COUNT_COLOR_AT_END, at_end)):
        for color in _present_and_one_absent(rng, COLORS, set(colors)):
            intents.append(_Intent(templates, _number(colors.count(color)), (("color", color),)))
    return intents


def _direction_intents(clip: Clip, rng: random.Random) -> list[_Intent]:
    intents = []
    for kind, templates in (("move", DIRECTION_MOVE), ("bounce", DIRECTION_BOUNCE)):
        events = _events_of(clip, kind)
        refs = [object_phrase(clip, e.obj, e.color_before) for e in events]
        for e, ref in zip(events, refs, strict=True):
            if refs.count(ref) == 1:
                answer = e.direction.capitalize() + "." if kind == "move" else f"The {EDGE[e.direction]} edge."
                intents.append(_Intent(templates, answer, (("ref", ref),)))
    return intents


def _order_intents(clip: Clip, rng: random.Random) -> list[_Intent]:
    intents = []
    for early, late in combinations(_unique_clause_events(clip), 2):
        a, b = (early, late) if rng.random() < 0.5 else (late, early)
        fill = (
            ("a_q", _event_question_form(clip, a)),
            ("a_s", event_clause(clip, a)),
            ("b_s", event_clause(clip, b)),
        )
        a_first = a is early
        intents += [
            _Intent(ORDER_BEFORE_OR_AFTER, "Before." if a_first else "After.", fill),
            _Intent(ORDER_FIRST, _sentence(event_clause(clip, early)), fill),
            _Intent(ORDER_LAST, _sentence(event_clause(clip, late)), fill),
            _Intent(ORDER_IS_BEFORE, "Yes." if a_first else "No.", fill),
            _Intent(ORDER_IS_AFTER, "No." if a_first else "Yes.", fill),
        ]
    return intents


def _when_intents(clip: Clip, rng: random.Random) -> list[_Intent]:
    intents = []
    for e in _unique_clause_events(clip):
        third = _third(clip, e)
        if third is not None:
            intents.append(_Intent(WHEN, WHEN_ANSWERS[third], (("a_q", _event_question_form(clip, e)),)))
    return intents


_INTENTS = {
    "color": _color_intents,
    "shape": _shape_intents,
    "count": _count_intents,
    "direction": _direction_intents,
    "order": _order_intents,
    "when": _when_intents,
}


def questions_for(clip: Clip, rng: random.Random, per_type: int | Mapping[str, int] = QUESTIONS_PER_TYPE) -> list[QA]:
    """A description QA plus up to ``per_type`` QAs of every other type that applies to the clip (one number for
    all types, or one per type)."""
    qas = [QA(rng.choice(DESCRIBE), describe(clip), "describe")]
    for qtype, intents_of in _INTENTS.items():
        intents = intents_of(clip, rng)
        count = per_type if isinstance(per_type, int) else per_type[qtype]
        for intent in rng.sample(intents, min(count, len(intents))):
            qas.append(intent.ask(rng, qtype))
    return qas


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer corpus
# ---------------------------------------------------------------------------------------------------------------------


def _all_subjects() -> list[str]:
    return [" ".join(w for w in (z, c, s) if w) for z in (None, *SIZES) for c in COLORS for s in SHAPES]


def _all_predicates() -> list[tuple[str, str]]:
    """(third person, base form) of every event predicate."""
    events = [Event(0.0, 1.0, "appear", 0, "red"), Event(0.0, 1.0, "disappear", 0, "red")]
    events += [Event(0.0, 1.0, k, 0, "red", direction=d) for k in ("move", "bounce") for d in EDGE]
    events += [Event(0.0, 1.0, "change_color", 0, "red", c) for c in COLORS]
    return [(event_predicate(e), event_predicate(e, base_form=True)) for e in events]


def corpus() -> list[str]:
    """Sentences that use every word the questions and answers can use: every template filled with every value."""
    subjects, predicates = _all_subjects(), _all_predicates()
    n = max(len(subjects), len(predicates), len(COLORS), len(SHAPES) * len(SIZES))
    sentences = []
    for i in range(n):
        subject, (third, base) = subjects[i % len(subjects)], predicates[i % len(predicates)]
        other_subject, (other_third, _) = subjects[(i * 7 + 3) % len(subjects)], predicates[(i + 5) % len(predicates)]
        shape, size, color = SHAPES[i % len(SHAPES)], SIZES[i // len(SHAPES) % len(SIZES)], COLORS[i % len(COLORS)]
        fill = {
            "obj": shape if i % 2 else f"{size} {shape}",
            "ref": f"{color} {shape}" if i % 2 else f"{size} {color} {shape}",
            "color": color,
            "shapes": PLURAL[shape],
            "a_q": f"the {subject} {base}",
            "a_s": f"the {subject} {third}",
            "b_s": f"the {other_subject} {other_third}",
        }
        for groups in TEMPLATES.values():
            sentences += [t.format(**fill) for templates in groups for t in templates]
        for opening in ("a", "the", "then a", "then the"):  # the shapes of describe()'s sentences
            sentences.append(_sentence(f"{opening} {subject} {third}"))
    answers = [c.capitalize() + "." for c in COLORS] + [f"A {s}." for s in SHAPES]
    answers += [_number(k) for k in range(len(NUMBER_WORDS))] + [d.capitalize() + "." for d in EDGE]
    answers += [f"The {edge} edge." for edge in EDGE.values()] + list(WHEN_ANSWERS)
    answers += ["Before.", "After.", "Yes.", "No."]
    return list(dict.fromkeys(sentences + answers))
