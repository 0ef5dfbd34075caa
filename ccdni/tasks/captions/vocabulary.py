"""Words ↔ ids for the caption task: a fixed vocabulary with four special tokens.

Ids 0..3 are the special tokens ``<pad>`` (padding after a caption's end, never scored),
``<bos>`` (the input that asks for the first word), ``<eos>`` (the word that ends a caption) and
``<unk>`` (any word the vocabulary lacks); the corpus's words follow in a fixed order. Captions
are split into words by :func:`tokenize`: lower case, runs of letters and digits (an
apostrophe inside a word is kept), every other character a separator.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    """The words of a caption: lower case, punctuation dropped."""
    return _WORD.findall(caption.lower())


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of words, the four specials first."""

    words: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {', '.join(SPECIALS)}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("a vocabulary lists every word once")
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Vocabulary:
        """The specials, then ``words`` in the order given (duplicates dropped)."""
        ordered = [w for w in dict.fromkeys(words) if w not in SPECIALS]
        return cls(SPECIALS + tuple(ordered))

    @classmethod
    def from_captions(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Every word seen at least ``min_count`` times, most frequent first (ties: a→z)."""
        counts = Counter(w for caption in captions for w in tokenize(caption))
        kept = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls.from_words(kept)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls(tuple(json.loads(Path(path).read_text())))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(list(self.words), indent=0) + "\n")

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def encode(self, words: Sequence[str]) -> list[int]:
        """Word ids; a word the vocabulary lacks becomes ``<unk>``."""
        return [self.index.get(w, UNK_ID) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to (not including) the first ``<eos>``; ``<pad>`` and ``<bos>`` skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            words.append(self.words[i])
        return words
