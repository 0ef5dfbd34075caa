"""MNIST scenes and their reference captions: the offline stand-in for COCO.

A scene is a 56×56 canvas cut into a 2×2 grid of 28×28 cells. Two or three MNIST digits are
placed in distinct cells, each either *large* (the 28×28 digit filling its cell) or *small*
(resized to 16×16 at a random offset inside its cell). Each scene gets
:data:`REFERENCES_PER_SCENE` reference captions, each from a different template of a small
grammar with synonyms ("a seven above a two", "a small two under a large seven", "two digits
seven and two", "there is a big seven at the top left and a two in the lower right corner",
...), 4 to :data:`MAX_WORDS` words long, so that consensus (CIDEr) and synonym matching
(METEOR) have something to work on and so that small truncations really cut credit.

Splits never share a digit image: the training and validation scenes draw their digits from
two disjoint parts of the MNIST training set (:data:`VAL_POOL` images for validation), the
test scenes from the MNIST test set. Within a split every image is used once before any is
used again. Everything is drawn from one :class:`random.Random` seeded with the corpus seed,
so a seed gives the same scenes and captions every time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CANVAS = 56  # pixels per side of a scene
CELL = 28  # pixels per side of a grid cell (an MNIST digit)
SMALL = 16  # side of a small digit
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, column): top left, top right, bottom left, ...
REFERENCES_PER_SCENE = 5  # as COCO's ~5 captions per image
MAX_WORDS = 20  # the longest caption, and the greedy decoder's limit (as in the paper)
MIN_WORDS = 4
VAL_POOL = 10_000  # MNIST training images kept for validation scenes
SPLITS = ("train", "val", "test")

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SMALL_WORDS = ("small", "little", "tiny")
LARGE_WORDS = ("large", "big")
NOUNS = ("digit", "number", "numeral")
PLURALS = ("digits", "numbers", "numerals")
CELL_NAMES = (
    (("top", "left"), ("upper", "left")),
    (("top", "right"), ("upper", "right")),
    (("bottom", "left"), ("lower", "left")),
    (("bottom", "right"), ("lower", "right")),
)
# every word the grammar can say, in a fixed order: the corpus vocabulary
GRAMMAR_WORDS = (
    *NUMBERS,
    *SMALL_WORDS,
    *LARGE_WORDS,
    *NOUNS,
    *PLURALS,
    *("top", "upper", "bottom", "lower", "left", "right", "corner"),
    *("a", "an", "and", "the", "is", "there", "of", "in", "at", "this", "shows"),
    *("image", "picture", "above", "over", "on", "below", "under", "beneath", "underneath"),
    *("to", "next", "diagonally"),
)


@dataclass(frozen=True)
class PlacedDigit:
    """One digit of a scene: which MNIST image, where and how large."""

    digit: int
    cell: int  # index into CELLS
    large: bool
    source: str  # "train" or "test": which MNIST set the image comes from
    index: int  # the image's position in that set
    offset: tuple[int, int]  # (dy, dx) of a small digit inside its cell; (0, 0) when large

    @property
    def row(self) -> int:
        return CELLS[self.cell][0]

    @property
    def column(self) -> int:
        return CELLS[self.cell][1]


@dataclass(frozen=True)
class Scene:
    """A scene: its digits in reading order (by cell) and its reference captions."""

    id: int
    digits: tuple[PlacedDigit, ...]
    captions: tuple[str, ...]


# --- the grammar ------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word == "eight" else "a"  # "an eight", "a one"; no adjective starts a vowel


def _noun_phrase(p: PlacedDigit, rng: random.Random, sized: bool) -> list[str]:
    """'a seven', 'an eight', 'a small seven', 'a big eight'."""
    words = [NUMBERS[p.digit]]
    if sized:
        words.insert(0, rng.choice(LARGE_WORDS if p.large else SMALL_WORDS))
    return [_article(words[0]), *words]


def _position(p: PlacedDigit, rng: random.Random, short: bool = False) -> list[str]:
    """'in the top left corner', 'at the upper right', 'in the bottom left'."""
    name = list(rng.choice(CELL_NAMES[p.cell]))
    if short:
        return ["at", "the", *name]
    return rng.choice((["in", "the", *name, "corner"], ["at", "the", *name], ["in", "the", *name]))


def _relation(x: PlacedDigit, y: PlacedDigit, rng: random.Random) -> list[str]:
    """Where x is relative to y: 'above', 'on top of', 'to the left of', 'diagonally below'..."""
    rows, columns = y.row - x.row, y.column - x.column  # > 0: y is below / right of x
    vertical = {
        1: (["above"], ["over"], ["on", "top", "of"]),
        -1: (["below"], ["under"], ["beneath"], ["underneath"]),
    }
    horizontal = {
        1: (["to", "the", "left", "of"], ["left", "of"], ["next", "to"]),
        -1: (["to", "the", "right", "of"], ["right", "of"], ["next", "to"]),
    }
    if columns == 0:
        return list(rng.choice(vertical[rows]))
    if rows == 0:
        return list(rng.choice(horizontal[columns]))
    up_down = "above" if rows > 0 else "below"
    side = "left" if columns > 0 else "right"
    return rng.choice(([up_down, "and", "to", "the", side, "of"], ["diagonally", up_down]))


def _numbers(ps: Sequence[PlacedDigit]) -> list[str]:
    """'seven and two', 'seven two and nine'."""
    names = [NUMBERS[p.digit] for p in ps]
    return [*names[:-1], "and", names[-1]]


def _listing(ps: Sequence[PlacedDigit], rng: random.Random, sized: bool) -> list[str]:
    phrases = [_noun_phrase(p, rng, sized) for p in ps]
    out = [w for phrase in phrases[:-1] for w in phrase]
    return [*out, "and", *phrases[-1]]


Template = Callable[[Sequence[PlacedDigit], random.Random], list[str]]


def _pair(ps: Sequence[PlacedDigit], rng: random.Random) -> tuple[PlacedDigit, PlacedDigit]:
    x, y = rng.sample(list(ps), 2)
    return x, y


def _rest(ps: Sequence[PlacedDigit], used: Sequence[PlacedDigit]) -> list[PlacedDigit]:
    return [p for p in ps if all(p is not u for u in used)]


def t_list(ps, rng):  # a seven and a two
    return _listing(ps, rng, sized=False)


def t_count(ps, rng):  # two digits seven and two
    return [NUMBERS[len(ps)], rng.choice(PLURALS), *_numbers(ps)]


def t_relation(ps, rng, sized=False):  # a seven above a two (and a nine next to the two)
    x, y = _pair(ps, rng)
    words = [*_noun_phrase(x, rng, sized), *_relation(x, y, rng), *_noun_phrase(y, rng, sized)]
    for z in _rest(ps, (x, y)):
        words += ["and", *_noun_phrase(z, rng, sized), *_relation(z, y, rng)]
        words += ["the", NUMBERS[y.digit]]
    return words


def t_sized_relation(ps, rng):  # a small two under a large seven
    return t_relation(ps, rng, sized=True)


def t_the_digit(ps, rng):  # the digit seven is on top of the digit two
    x, y = _pair(ps, rng)
    noun = rng.choice(NOUNS)
    return [
        "the",
        noun,
        NUMBERS[x.digit],
        "is",
        *_relation(x, y, rng),
        "the",
        noun,
        NUMBERS[y.digit],
    ]


def t_positions(ps, rng):  # a large seven in the top left corner and a small two at the bottom
    few = len(ps) == 2  # three digits with sizes and positions would not fit in 20 words
    phrases = [[*_noun_phrase(p, rng, few), *_position(p, rng, not few)] for p in ps]
    out = [w for phrase in phrases[:-1] for w in phrase]
    return [*out, "and", *phrases[-1]]


def t_there_is(ps, rng):  # there is a seven above a two and a nine in the lower right corner
    if len(ps) == 2:
        a, b = ps
        return ["there", "is", *_noun_phrase(a, rng, False), *_position(a, rng)] + [
            "and",
            *_noun_phrase(b, rng, False),
            *_position(b, rng),
        ]
    x, y = _pair(ps, rng)
    (z,) = _rest(ps, (x, y))
    words = ["there", "is", *_noun_phrase(x, rng, False), *_relation(x, y, rng)]
    words += [*_noun_phrase(y, rng, False), "and", *_noun_phrase(z, rng, False)]
    return words + _position(z, rng, short=True)


def t_image_of(ps, rng):  # an image of the numbers seven and two
    picture = rng.choice((["an", "image"], ["a", "picture"]))
    return [*picture, "of", "the", rng.choice(PLURALS), *_numbers(ps)]


def t_shows(ps, rng):  # this picture shows a seven above a two
    x, y = _pair(ps, rng)
    words = ["this", rng.choice(("image", "picture")), "shows"]
    words += [*_noun_phrase(x, rng, False), *_relation(x, y, rng), *_noun_phrase(y, rng, False)]
    for z in _rest(ps, (x, y)):
        words += ["and", *_noun_phrase(z, rng, False)]
    return words


TEMPLATES: tuple[Template, ...] = (
    t_list,
    t_count,
    t_relation,
    t_sized_relation,
    t_the_digit,
    t_positions,
    t_there_is,
    t_image_of,
    t_shows,
)


def describe(digits: Sequence[PlacedDigit], rng: random.Random) -> tuple[str, ...]:
    """:data:`REFERENCES_PER_SCENE` distinct captions, each from a different template."""
    captions: list[str] = []
    for template in rng.sample(TEMPLATES, len(TEMPLATES)):
        for _ in range(8):  # synonyms change the length: retry a long draw a few times
            words = template(digits, rng)
            caption = " ".join(words)
            if MIN_WORDS <= len(words) <= MAX_WORDS and caption not in captions:
                captions.append(caption)
                break
        if len(captions) == REFERENCES_PER_SCENE:
            return tuple(captions)
    raise AssertionError("the grammar gives every scene enough captions")  # pragma: no cover


# --- scenes -----------------------------------------------------------------------------------


class _ImageStream:
    """Image indices of one split's pool, each used once before any is used again."""

    def __init__(self, pool: Sequence[int], rng: random.Random):
        self.pool = list(pool)
        self.rng = rng
        self.queue: list[int] = []

    def take(self) -> int:
        if not self.queue:
            self.queue = self.pool[:]
            self.rng.shuffle(self.queue)
        return self.queue.pop()


def image_pools(
    n_train_images: int, n_test_images: int, seed: int
) -> dict[str, tuple[str, list[int]]]:
    """Split → (MNIST set, indices): train and val are disjoint parts of the training set."""
    order = list(range(n_train_images))
    random.Random(seed).shuffle(order)
    return {
        "train": ("train", sorted(order[VAL_POOL:])),
        "val": ("train", sorted(order[:VAL_POOL])),
        "test": ("test", list(range(n_test_images))),
    }


def make_scenes(
    train_labels: Sequence[int], test_labels: Sequence[int], sizes: dict[str, int], seed: int
) -> dict[str, list[Scene]]:
    """The scenes of every split, drawn from the MNIST labels (images are rendered apart)."""
    labels = {"train": list(train_labels), "test": list(test_labels)}
    pools = image_pools(len(labels["train"]), len(labels["test"]), seed)
    rng = random.Random(seed)
    scenes: dict[str, list[Scene]] = {}
    next_id = 0
    for split in SPLITS:
        source, pool = pools[split]
        stream = _ImageStream(pool, rng)
        scenes[split] = []
        for _ in range(sizes.get(split, 0)):
            cells = sorted(rng.sample(range(len(CELLS)), rng.choice((2, 3))))
            digits = []
            for cell in cells:
                index = stream.take()
                large = rng.random() < 0.5
                offset = (
                    (0, 0)
                    if large
                    else (rng.randint(0, CELL - SMALL), rng.randint(0, CELL - SMALL))
                )
                digits.append(
                    PlacedDigit(labels[source][index], cell, large, source, index, offset)
                )
            scenes[split].append(Scene(next_id, tuple(digits), describe(digits, rng)))
            next_id += 1
    return scenes


def render(scenes: Sequence[Scene], images: dict[str, torch.Tensor]) -> torch.Tensor:
    """Canvases (S, 56, 56) uint8 from the MNIST ``images[source]`` (n, 28, 28) uint8."""
    canvas = torch.zeros(len(scenes), CANVAS, CANVAS, dtype=torch.uint8)
    for s, scene in enumerate(scenes):
        for p in scene.digits:
            digit = images[p.source][p.index]  # (28, 28)
            if not p.large:
                resized = F.interpolate(
                    digit[None, None].float(), size=(SMALL, SMALL), mode="area"
                )  # (1, 1, 16, 16)
                digit = resized[0, 0].round().clamp(0, 255).to(torch.uint8)
            top = p.row * CELL + p.offset[0]
            left = p.column * CELL + p.offset[1]
            h, w = digit.shape
            region = canvas[s, top : top + h, left : left + w]
            torch.maximum(region, digit, out=region)
    return canvas
