"""The clip model and its seeded generator: shapes that appear, move, bounce, change color and disappear.

Coordinates are normalized: x and y in [0, 1] of the (square) frame, y growing downwards; an object's extent is a
box of half-side ``RADIUS[size]`` around its center, so any render size shows the same scene.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = ("red", "green", "blue", "yellow", "white", "purple")
SIZES = ("small", "large")
DIRECTIONS = ("left", "right", "up", "down")
EVENT_KINDS = ("appear", "disappear", "move", "bounce", "change_color")
CLIP_KINDS = ("short", "long")

# Far apart in RGB and in YUV chroma, so they survive H.264's 4:2:0 subsampling.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 110, 255),
    "yellow": (245, 220, 40),
    "white": (245, 245, 245),
    "purple": (170, 60, 230),
}
# Dark and unsaturated, so every object color stands out in luma as well as in chroma.
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "black": (16, 16, 20),
    "gray": (58, 58, 62),
    "brown": (62, 44, 30),
    "teal": (18, 52, 58),
}
# Half-side of an object's bounding box, as a fraction of the frame side: 9 and 16 pixels at 112x112.
RADIUS = {"small": 0.08, "large": 0.14}
# Free space kept between the bounding boxes of any two visible objects.
GAP = 0.02
# A unit step along each direction, in normalized coordinates (y grows downwards).
STEP = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

SHORT_DURATION = (4.0, 20.0)
LONG_DURATION = (60.0, 300.0)
# Short clips: quiet lead-in, tail and gaps so each event's before and after states are seen at 2 fps.
SHORT_LEAD, SHORT_TAIL, SHORT_EVENT_GAP = 1.0, 1.0, 1.0
SHORT_EVENT_LENGTH = (1.5, 3.0)
MAX_SHORT_EVENTS = 4
LONG_EVENT_LENGTH = (2.0, 6.0)
LONG_MARGIN = 2.0
MOVE_DISTANCE = (0.2, 0.45)
MIN_BOUNCE_DISTANCE = 0.15
LONG_DRIFT = (0.01, 0.04)


@dataclass(frozen=True)
class Background:
    name: str
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class SceneObject:
    shape: str
    size: str
    color: str  # color when first visible
    # (t, x, y) keyframes of the center, linear in between and held before the first and after the last.
    keyframes: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class Event:
    """One change, spread over [time, end] so that frames at 2 fps show it happening."""

    time: float
    end: float
    kind: str
    obj: int
    color_before: str  # the object's color when the event starts
    color_after: str | None = None  # change_color only
    direction: str | None = None  # move: where it goes; bounce: the edge it bounces off


@dataclass(frozen=True)
class _Timeline:
    """What object_state_at needs about one object, gathered once per clip."""

    times: tuple[float, ...]
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    appear: tuple[float, float] | None
    disappear: tuple[float, float] | None
    color_changes: tuple[Event, ...]
    color: str


@dataclass
class Clip:
    """A clip: objects over a background, and the events that change them; ``kind`` is "short" or "long"."""

    seed: int
    kind: str
    duration: float
    background: Background
    objects: list[SceneObject]
    events: list[Event]  # sorted by time

    @cached_property
    def timelines(self) -> tuple[_Timeline, ...]:
        return tuple(_timeline(self, i) for i in range(len(self.objects)))


def _timeline(clip: Clip, obj: int) -> _Timeline:
    o = clip.objects[obj]
    own = [e for e in clip.events if e.obj == obj]
    appear = next(((e.time, e.end) for e in own if e.kind == "appear"), None)
    disappear = next(((e.time, e.end) for e in own if e.kind == "disappear"), None)
    return _Timeline(
        times=tuple(k[0] for k in o.keyframes),
        xs=tuple(k[1] for k in o.keyframes),
        ys=tuple(k[2] for k in o.keyframes),
        appear=appear,
        disappear=disappear,
        color_changes=tuple(e for e in own if e.kind == "change_color"),
        color=o.color,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Ground truth at any time
# ---------------------------------------------------------------------------------------------------------------------


def _interpolate(times: tuple[float, ...], values: tuple[float, ...], t: float) -> float:
    i = bisect_right(times, t)
    if i == 0:
        return values[0]
    if i == len(times):
        return values[-1]
    t0, t1 = times[i - 1], times[i]
    return values[i - 1] + (values[i] - values[i - 1]) * (t - t0) / (t1 - t0)


def _ramp(t: float, start: float, end: float) -> float:
    """0 before start, 1 after end, linear in between."""
    return min(1.0, max(0.0, (t - start) / (end - start)))


def _scale(tl: _Timeline, t: float) -> float:
    """Drawn size relative to full size: appearing objects grow from nothing, disappearing ones shrink away."""
    grown = _ramp(t, *tl.appear) if tl.appear else 1.0
    shrunk = 1.0 - _ramp(t, *tl.disappear) if tl.disappear else 1.0
    return min(grown, shrunk)


def _color_name(tl: _Timeline, t: float) -> str:
    """The named color: a change counts as done from its midpoint on, when the blend is closer to the new color."""
    color = tl.color
    for e in tl.color_changes:
        if t >= (e.time + e.end) / 2:
            color = e.color_after
    return color


def _color_rgb(tl: _Timeline, t: float) -> tuple[float, float, float]:
    """The drawn color: a change blends linearly from the old color to the new one over the event."""
    rgb = COLOR_RGB[tl.color]
    for e in tl.color_changes:
        if t <= e.time:
            break
        w = _ramp(t, e.time, e.end)
        new = COLOR_RGB[e.color_after]
        rgb = tuple(a + (b - a) * w for a, b in zip(rgb, new, strict=True))
    return rgb


def object_state_at(clip: Clip, obj: int, t: float) -> tuple[bool, float, float, str]:
    """(visible, x, y, color name) of object ``obj`` at time ``t``: the ground truth of any frame."""
    tl = clip.timelines[obj]
    return (
        _scale(tl, t) > 0.0,
        _interpolate(tl.times, tl.xs, t),
        _interpolate(tl.times, tl.ys, t),
        _color_name(tl, t),
    )


def object_look_at(clip: Clip, obj: int, t: float) -> tuple[float, float, float, tuple[float, float, float]]:
    """(scale, x, y, rgb) of object ``obj`` at time ``t``: what the renderer draws, transitions included."""
    tl = clip.timelines[obj]
    return (
        _scale(tl, t),
        _interpolate(tl.times, tl.xs, t),
        _interpolate(tl.times, tl.ys, t),
        _color_rgb(tl, t),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Geometry used while generating
# ---------------------------------------------------------------------------------------------------------------------

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def swept_box(path: list[tuple[float, float]], radius: float) -> Box:
    """The box an object of ``radius`` covers while its center travels straight through the points of ``path``."""
    xs = [p[0] for p in path]
    ys = [p[1] for p in path]
    return (min(xs) - radius, min(ys) - radius, max(xs) + radius, max(ys) + radius)


def boxes_apart(a: Box, b: Box) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _inside(p: tuple[float, float], radius: float) -> bool:
    return radius <= p[0] <= 1.0 - radius and radius <= p[1] <= 1.0 - radius


def _free_spot(rng: random.Random, radius: float, taken: list[Box], tries: int = 60) -> tuple[float, float] | None:
    for _ in range(tries):
        p = (rng.uniform(radius, 1.0 - radius), rng.uniform(radius, 1.0 - radius))
        if all(boxes_apart(swept_box([p], radius), b) for b in taken):
            return p
    return None


def _edge_point(p: tuple[float, float], radius: float, direction: str) -> tuple[float, float]:
    """Where the object's box touches the frame edge when it travels from ``p`` towards ``direction``."""
    x, y = p
    return {"left": (radius, y), "right": (1.0 - radius, y), "up": (x, radius), "down": (x, 1.0 - radius)}[direction]


def _moved(p: tuple[float, float], direction: str, distance: float) -> tuple[float, float]:
    dx, dy = STEP[direction]
    return (p[0] + dx * distance, p[1] + dy * distance)


# ---------------------------------------------------------------------------------------------------------------------
# Short clips
# ---------------------------------------------------------------------------------------------------------------------


def max_short_events(duration: float) -> int:
    """How many events of minimal length fit with the lead-in, gaps and tail."""
    room = duration - SHORT_LEAD - SHORT_TAIL + SHORT_EVENT_GAP
    return min(MAX_SHORT_EVENTS, int(room // (SHORT_EVENT_LENGTH[0] + SHORT_EVENT_GAP)))


def _event_windows(rng: random.Random, duration: float, n: int) -> list[tuple[float, float]]:
    """n non-overlapping (start, end) windows, each >= the minimal length, with the lead-in, gaps and tail kept."""
    fixed = SHORT_LEAD + SHORT_TAIL + SHORT_EVENT_GAP * (n - 1) + SHORT_EVENT_LENGTH[0] * n
    slack = duration - fixed
    stretch = SHORT_EVENT_LENGTH[1] - SHORT_EVENT_LENGTH[0]
    extra = [rng.uniform(0.0, stretch) for _ in range(n)]
    # At most half the slack lengthens events; the rest spreads them out in time.
    if sum(extra) > slack / 2:
        extra = [e * (slack / 2) / sum(extra) for e in extra]
    spare = slack - sum(extra)
    weights = [rng.random() for _ in range(n + 1)]
    pads = [spare * w / sum(weights) for w in weights]
    windows = []
    t = SHORT_LEAD + pads[0]
    for i in range(n):
        end = t + SHORT_EVENT_LENGTH[0] + extra[i]
        windows.append((t, end))
        t = end + SHORT_EVENT_GAP + pads[i + 1]
    return windows


@dataclass
class _Actor:
    """An object while a short clip is being built."""

    shape: str
    size: str
    color: str
    state: str  # "pending" (not appeared yet), "visible" or "gone"
    position: tuple[float, float] = (0.5, 0.5)
    keyframes: list[tuple[float, float, float]] | None = None

    @property
    def radius(self) -> float:
        return RADIUS[self.size]

    def box(self) -> Box:
        return swept_box([self.position], self.radius)

    def go(self, path: list[tuple[float, float]], start: float, end: float) -> None:
        """Travel through ``path`` (starting at the current position) at constant speed between start and end."""
        lengths = [math.dist(a, b) for a, b in zip(path, path[1:], strict=False)]
        total = sum(lengths)
        t = start
        self.keyframes.append((start, *path[0]))
        for point, length in zip(path[1:], lengths, strict=True):
            t += (end - start) * length / total
            self.keyframes.append((t, *point))
        self.position = path[-1]


def _others_boxes(actors: list[_Actor], me: int) -> list[Box]:
    return [a.box() for i, a in enumerate(actors) if i != me and a.state == "visible"]


def _feasible(visible: int, pending: int, remaining: int) -> bool:
    """Can ``remaining`` events still happen: every pending object must appear, other events need a visible one."""
    return pending <= remaining and (remaining == 0 or visible > 0 or pending > 0)


def _try_appear(rng: random.Random, actors: list[_Actor], start: float, end: float) -> Event | None:
    i = next(i for i, a in enumerate(actors) if a.state == "pending")
    a = actors[i]
    spot = _free_spot(rng, a.radius, _others_boxes(actors, i))
    if spot is None:
        return None
    a.state, a.position, a.keyframes = "visible", spot, [(0.0, *spot)]
    return Event(start, end, "appear", i, a.color)


def _try_disappear(rng: random.Random, actors: list[_Actor], start: float, end: float) -> Event:
    i = rng.choice([i for i, a in enumerate(actors) if a.state == "visible"])
    actors[i].state = "gone"
    return Event(start, end, "disappear", i, actors[i].color)


def _try_change_color(rng: random.Random, actors: list[_Actor], start: float, end: float) -> Event:
    i = rng.choice([i for i, a in enumerate(actors) if a.state == "visible"])
    a = actors[i]
    before, a.color = a.color, rng.choice([c for c in COLORS if c != a.color])
    return Event(start, end, "change_color", i, before, a.color)


def _try_move(rng: random.Random, actors: list[_Actor], start: float, end: float) -> Event | None:
    options = [(i, d) for i, a in enumerate(actors) if a.state == "visible" for d in DIRECTIONS]
    rng.shuffle(options)
    for i, direction in options:
        a = actors[i]
        room = math.dist(a.position, _edge_point(a.position, a.radius, direction))
        if room < MOVE_DISTANCE[0]:
            continue
        target = _moved(a.position, direction, rng.uniform(MOVE_DISTANCE[0], min(MOVE_DISTANCE[1], room)))
        path = [a.position, target]
        if all(boxes_apart(swept_box(path, a.radius), b) for b in _others_boxes(actors, i)):
            a.go(path, start, end)
            return Event(start, end, "move", i, a.color, direction=direction)
    return None


def _try_bounce(rng: random.Random, actors: list[_Actor], start: float, end: float) -> Event | None:
    options = [(i, d) for i, a in enumerate(actors) if a.state == "visible" for d in DIRECTIONS]
    rng.shuffle(options)
    for i, direction in options:
        a = actors[i]
        edge = _edge_point(a.position, a.radius, direction)
        path = [a.position, edge, a.position]
        if math.dist(a.position, edge) < MIN_BOUNCE_DISTANCE:
            continue
        if all(boxes_apart(swept_box(path, a.radius), b) for b in _others_boxes(actors, i)):
            a.go(path, start, end)
            return Event(start, end, "bounce", i, a.color, direction=direction)
    return None


_SHORT_EVENT_WEIGHTS = {"disappear": 0.12, "move": 0.33, "bounce": 0.2, "change_color": 0.35, "appear": 0.3}
_TRY_EVENT = {
    "appear": _try_appear,
    "disappear": _try_disappear,
    "move": _try_move,
    "bounce": _try_bounce,
    "change_color": _try_change_color,
}


def _allowed_kinds(actors: list[_Actor], remaining: int) -> list[str]:
    """Event kinds that keep the rest of the clip feasible (``remaining`` counts this event)."""
    visible = sum(a.state == "visible" for a in actors)
    pending = sum(a.state == "pending" for a in actors)
    if pending == remaining:
        return ["appear"]
    kinds = ["appear"] if pending else []
    if visible:
        kinds += ["move", "bounce", "change_color"]
        if _feasible(visible - 1, pending, remaining - 1):
            kinds.append("disappear")
    return kinds


def _next_event(rng: random.Random, actors: list[_Actor], window: tuple[float, float], remaining: int) -> Event | None:
    kinds = _allowed_kinds(actors, remaining)
    while kinds:
        kind = rng.choices(kinds, weights=[_SHORT_EVENT_WEIGHTS[k] for k in kinds])[0]
        event = _TRY_EVENT[kind](rng, actors, *window)
        if event is not None:
            return event
        kinds.remove(kind)
    return None


def _distinct_looks(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n (shape, size) pairs, all different, so size + color + shape always names one object."""
    return rng.sample([(s, z) for s in SHAPES for z in SIZES], n)


def _try_short_clip(rng: random.Random, seed: int, duration: float) -> Clip | None:
    n_events = rng.randint(1, max_short_events(duration))
    windows = _event_windows(rng, duration, n_events)
    looks = _distinct_looks(rng, rng.randint(1, 3))
    actors = [_Actor(s, z, rng.choice(COLORS), "pending" if rng.random() < 0.3 else "visible") for s, z in looks]
    while sum(a.state == "pending" for a in actors) > n_events:
        next(a for a in actors if a.state == "pending").state = "visible"
    for i, a in enumerate(actors):
        if a.state == "visible":
            spot = _free_spot(rng, a.radius, _others_boxes(actors[:i], -1))
            if spot is None:
                return None
            a.position, a.keyframes = spot, [(0.0, *spot)]
    first_colors = [a.color for a in actors]
    events = []
    for k, window in enumerate(windows):
        event = _next_event(rng, actors, window, n_events - k)
        if event is None:
            return None
        events.append(event)
    background = rng.choice(sorted(BACKGROUND_RGB))
    return Clip(
        seed=seed,
        kind="short",
        duration=duration,
        background=Background(background, BACKGROUND_RGB[background]),
        objects=[SceneObject(a.shape, a.size, c, tuple(a.keyframes))
                 for a, c in zip(actors, first_colors, strict=True)],
        events=events,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Long clips
# ---------------------------------------------------------------------------------------------------------------------


def _drift(rng: random.Random, p: tuple[float, float], radius: float) -> tuple[float, float]:
    """Where a still object slowly ends up: half of them stay put, the others drift a few pixels over the clip."""
    if rng.random() < 0.5:
        return p
    for _ in range(10):
        angle, length = rng.uniform(0.0, 2 * math.pi), rng.uniform(*LONG_DRIFT)
        q = (p[0] + length * math.cos(angle), p[1] + length * math.sin(angle))
        if _inside(q, radius):
            return q
    return p


def _still_objects(
    rng: random.Random, looks: list[tuple[str, str]], duration: float, anchored: int | None
) -> tuple[list[SceneObject], list[Box]] | None:
    """The still objects of a long clip and the boxes they sweep while drifting (``anchored`` does not drift)."""
    objects: list[SceneObject] = []
    boxes: list[Box] = []
    for i, (shape, size) in enumerate(looks):
        radius = RADIUS[size]
        p = _free_spot(rng, radius, boxes)
        if p is None:
            return None
        q = p if i == anchored else _drift(rng, p, radius)
        boxes.append(swept_box([p, q], radius))
        objects.append(SceneObject(shape, size, rng.choice(COLORS), ((0.0, *p), (duration, *q))))
    return objects, boxes


def _brief_visit(
    rng: random.Random, objects: list[SceneObject], boxes: list[Box], look: tuple[str, str], start: float, end: float
) -> list[Event] | None:
    """A new object that grows in at ``start`` and shrinks away by ``end``; appended to ``objects``."""
    shape, size = look
    p = _free_spot(rng, RADIUS[size], boxes)
    if p is None:
        return None
    color = rng.choice(COLORS)
    objects.append(SceneObject(shape, size, color, ((0.0, *p),)))
    fade = min(1.0, (end - start) / 4)
    new = len(objects) - 1
    return [Event(start, start + fade, "appear", new, color), Event(end - fade, end, "disappear", new, color)]


def _try_long_clip(rng: random.Random, seed: int, duration: float) -> Clip | None:
    looks = _distinct_looks(rng, rng.randint(1, 3) + 1)
    still_looks, newcomer = looks[:-1], looks[-1]
    key = rng.choice(("appear", "change_color", "move"))
    length = rng.uniform(*LONG_EVENT_LENGTH)
    start = rng.uniform(LONG_MARGIN, duration - LONG_MARGIN - length)
    end = start + length
    actor = rng.randrange(len(still_looks))
    still = _still_objects(rng, still_looks, duration, actor if key == "move" else None)
    if still is None:
        return None
    objects, boxes = still
    if key == "change_color":
        o = objects[actor]
        events = [Event(start, end, "change_color", actor, o.color, rng.choice([c for c in COLORS if c != o.color]))]
    elif key == "move":
        move = _long_move(rng, objects, boxes, actor, start, end)
        events = [move] if move else None
    else:
        events = _brief_visit(rng, objects, boxes, newcomer, start, end)
    if events is None:
        return None
    background = rng.choice(sorted(BACKGROUND_RGB))
    return Clip(seed, "long", duration, Background(background, BACKGROUND_RGB[background]), objects, events)


def _long_move(
    rng: random.Random, objects: list[SceneObject], boxes: list[Box], mover: int, start: float, end: float
) -> Event | None:
    """The key move of a long clip; replaces the mover's keyframes with rest, move, rest."""
    o = objects[mover]
    radius = RADIUS[o.size]
    p = o.keyframes[0][1:]
    others = [b for i, b in enumerate(boxes) if i != mover]
    for direction in rng.sample(DIRECTIONS, len(DIRECTIONS)):
        room = math.dist(p, _edge_point(p, radius, direction))
        if room < MOVE_DISTANCE[0]:
            continue
        q = _moved(p, direction, rng.uniform(MOVE_DISTANCE[0], min(MOVE_DISTANCE[1], room)))
        if all(boxes_apart(swept_box([p, q], radius), b) for b in others):
            objects[mover] = SceneObject(o.shape, o.size, o.color, ((start, *p), (end, *q)))
            return Event(start, end, "move", mover, o.color, direction=direction)
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------


def generate_clip(seed: int, kind: str = "short", duration: float | None = None) -> Clip:
    """The clip of ``seed``: the same (seed, kind, duration) always gives the same clip."""
    if kind not in CLIP_KINDS:
        raise ValueError(f"kind must be one of {CLIP_KINDS}, not {kind!r}")
    rng = random.Random(f"{kind}:{seed}:{duration}")
    low, high = SHORT_DURATION if kind == "short" else LONG_DURATION
    duration = round(rng.uniform(low, high), 1) if duration is None else float(duration)
    if kind == "short" and max_short_events(duration) < 1:
        raise ValueError(f"a short clip needs at least {SHORT_LEAD + SHORT_TAIL + SHORT_EVENT_LENGTH[0]} s")
    if kind == "long" and duration < 2 * LONG_MARGIN + LONG_EVENT_LENGTH[1]:
        raise ValueError(f"a long clip needs at least {2 * LONG_MARGIN + LONG_EVENT_LENGTH[1]} s")
    build = _try_short_clip if kind == "short" else _try_long_clip
    # A crowded frame can leave no room for a move or an appearance; such rare attempts are drawn again.
    while (clip := build(rng, seed, duration)) is None:
        pass
    return clip
