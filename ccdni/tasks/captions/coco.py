"""Caption corpora in COCO format on disk: the loader every caption run reads.

A corpus is a folder holding, for each split ``train``, ``val`` and ``test``:

- ``captions_SPLIT.json``: COCO's caption format, ``{"images": [{"id": 1, ...}, ...],
  "annotations": [{"id": 9, "image_id": 1, "caption": "a man riding a horse"}, ...]}``
  (other keys are allowed and ignored);
- ``features_SPLIT.npy``: float32 ``(n_images, F)``, row ``i`` the image feature of the ``i``-th
  entry of that JSON's ``"images"`` list (any CNN's, e.g. a ResNet's pooled 2048-d output;
  the MNIST-scene corpus stores its visual cortex's 256-d feature);

and optionally ``vocab.json`` (a JSON list of words, ``<pad> <bos> <eos> <unk>`` first). Without
it the vocabulary is every word seen at least :data:`MIN_WORD_COUNT` times in the training
captions; the other words read as ``<unk>``. A caption longer than
:data:`~ccdni.tasks.captions.scenes.MAX_WORDS` words is cut to that many for training (its full
text stays a reference for the metrics). :func:`write_split` writes the same files, which is
how the MNIST-scene corpus is stored.

Whatever is missing or malformed raises :class:`CorpusError` (a ``DataMissingError``: the
command line prints it as one error line) naming the file and the problem.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccdni.tasks.captions.scenes import MAX_WORDS, SPLITS
from ccdni.tasks.captions.vocabulary import PAD_ID, Vocabulary, tokenize
from ccdni.tasks.mnist_data import DataMissingError

MIN_WORD_COUNT = 4  # without vocab.json: rarer training words become <unk> (common COCO practice)
VOCAB_FILE = "vocab.json"


def captions_file(root: Path, split: str) -> Path:
    return root / f"captions_{split}.json"


def features_file(root: Path, split: str) -> Path:
    return root / f"features_{split}.npy"


class CorpusError(DataMissingError):
    """A caption corpus that cannot be used (a file absent or malformed); the one-line message
    names the file and the problem."""


@dataclass(frozen=True)
class CaptionSplit:
    """One split: image features, their references, and every (image, caption) pair as ids."""

    name: str
    image_ids: tuple[int, ...]  # (I,) COCO image ids, in the JSON's order
    features: torch.Tensor  # (I, F) float32
    references: tuple[tuple[str, ...], ...]  # (I,) each image's captions, as written
    pair_image: torch.Tensor  # (P,) long: the row in ``features`` of each pair's image
    words: torch.Tensor  # (P, MAX_WORDS) long: the caption's word ids, <pad> after its end
    lengths: torch.Tensor  # (P,) long: words in each caption (1..MAX_WORDS)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def n_pairs(self) -> int:
        return int(self.pair_image.shape[0])


@dataclass(frozen=True)
class CaptionCorpus:
    """A corpus read from disk: its vocabulary and its three splits."""

    root: Path
    vocabulary: Vocabulary
    splits: dict[str, CaptionSplit]

    @property
    def feature_size(self) -> int:
        return int(self.splits["train"].features.shape[1])


def missing_files(root: Path) -> list[str]:
    names = [f(root, s).name for s in SPLITS for f in (captions_file, features_file)]
    return [name for name in names if not (root / name).is_file()]


def check_corpus(root: str | Path, hint: str = "") -> Path:
    """The resolved corpus folder, or :class:`CorpusError` naming what is missing."""
    resolved = Path(root).expanduser().resolve()
    missing = missing_files(resolved)
    if missing:
        raise CorpusError(
            f"caption corpus not found in {resolved}: missing {', '.join(missing)}"
            + (f"; {hint}" if hint else "")
        )
    return resolved


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CorpusError(f"{path}: a COCO captions file needs an 'images' list")
    if not isinstance(data.get("annotations"), list):
        raise CorpusError(f"{path}: a COCO captions file needs an 'annotations' list")
    return data


def _read_features(path: Path, n_images: int, captions: Path) -> torch.Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorpusError(f"{path}: not a numpy array file ({exc})") from None
    if array.ndim != 2 or array.shape[0] != n_images:
        raise CorpusError(
            f"{path}: features of shape {array.shape}, expected ({n_images}, F): one row per "
            f"image of {captions.name}"
        )
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise CorpusError(f"{path}: features must be finite floating-point numbers")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def read_references(path: Path) -> tuple[tuple[int, ...], dict[int, list[str]]]:
    """Image ids in file order and every image's captions, checked."""
    data = _read_json(path)
    ids: list[int] = []
    for entry in data["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
            raise CorpusError(f"{path}: every image needs an integer 'id'")
        ids.append(entry["id"])
    if len(set(ids)) != len(ids):
        raise CorpusError(f"{path}: an image id appears twice")
    references: dict[int, list[str]] = {i: [] for i in ids}
    for note in data["annotations"]:
        if not isinstance(note, dict) or not isinstance(note.get("caption"), str):
            raise CorpusError(f"{path}: every annotation needs a 'caption' string")
        image = note.get("image_id")
        if image not in references:
            raise CorpusError(f"{path}: an annotation names image {image!r}, not in 'images'")
        if not tokenize(note["caption"]):
            raise CorpusError(f"{path}: image {image} has a caption without words")
        references[image].append(note["caption"])
    for image, captions in references.items():
        if not captions:
            raise CorpusError(f"{path}: image {image} has no caption")
    return tuple(ids), references


def _split(root: Path, name: str, vocabulary: Vocabulary, ids, references) -> CaptionSplit:
    features = _read_features(features_file(root, name), len(ids), captions_file(root, name))
    pair_image, words, lengths = [], [], []
    for row, image in enumerate(ids):
        for caption in references[image]:
            encoded = vocabulary.encode(tokenize(caption)[:MAX_WORDS])
            pair_image.append(row)
            lengths.append(len(encoded))
            words.append(encoded + [PAD_ID] * (MAX_WORDS - len(encoded)))
    return CaptionSplit(
        name,
        tuple(ids),
        features,
        tuple(tuple(references[i]) for i in ids),
        torch.tensor(pair_image, dtype=torch.long),
        torch.tensor(words, dtype=torch.long).view(-1, MAX_WORDS),
        torch.tensor(lengths, dtype=torch.long),
    )


def load_corpus(root: str | Path, hint: str = "") -> CaptionCorpus:
    """Read and check the COCO-format corpus in ``root`` (cached per process: read-only)."""
    return _load_cached(str(check_corpus(root, hint)))


@functools.lru_cache(maxsize=2)
def _load_cached(resolved: str) -> CaptionCorpus:
    root = Path(resolved)
    read = {name: read_references(captions_file(root, name)) for name in SPLITS}
    vocab_path = root / VOCAB_FILE
    if vocab_path.is_file():
        try:
            vocabulary = Vocabulary.load(vocab_path)
        except (ValueError, TypeError) as exc:
            raise CorpusError(f"{vocab_path}: not a vocabulary ({exc})") from None
    else:
        train_captions = (c for captions in read["train"][1].values() for c in captions)
        vocabulary = Vocabulary.from_captions(train_captions, MIN_WORD_COUNT)
    splits = {name: _split(root, name, vocabulary, *read[name]) for name in SPLITS}
    sizes = {name: int(s.features.shape[1]) for name, s in splits.items()}
    if len(set(sizes.values())) != 1:
        raise CorpusError(f"{root}: the splits' features differ in size: {sizes}")
    return CaptionCorpus(root, vocabulary, splits)


def clear_cache() -> None:
    _load_cached.cache_clear()


def write_split(
    root: Path,
    split: str,
    images: list[dict[str, Any]],
    captions: list[list[str]],
    features: torch.Tensor,
) -> None:
    """Write ``captions_SPLIT.json`` (COCO format) and ``features_SPLIT.npy`` into ``root``.

    ``images[i]`` is the COCO image entry (with its ``id``), ``captions[i]`` its captions and
    ``features[i]`` (F,) its feature."""
    annotations = []
    for entry, texts in zip(images, captions, strict=True):
        for text in texts:
            annotations.append({"id": len(annotations), "image_id": entry["id"], "caption": text})
    document = {"info": {"description": f"ccdni caption corpus, {split} split"}, "images": images}
    document["annotations"] = annotations
    captions_file(root, split).write_text(json.dumps(document) + "\n")
    np.save(features_file(root, split), features.detach().cpu().numpy().astype(np.float32))
