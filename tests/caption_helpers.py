"""What the caption tests share: a tiny MNIST-scene corpus built once per test session (from
the real MNIST files, nothing downloaded) and small COCO-format corpora written by hand."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ccdni.tasks.captions.build import CorpusConfig, ensure_corpus
from ccdni.tasks.captions.coco import write_split

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CCDNI_DATA") or ROOT.parent / "shared" / "data").resolve()
TINY = CorpusConfig(seed=5, train_scenes=240, val_scenes=40, test_scenes=30, cnn_epochs=1)


def tiny_corpus(tmp_path_factory) -> Path:
    """The session's tiny MNIST-scene corpus (built on first use, then found cached)."""
    out = tmp_path_factory.getbasetemp() / "tiny-captions"
    ensure_corpus(DATA_DIR, out, TINY)
    return out


def write_coco_corpus(
    root: Path, captions: dict[str, list[list[str]]], feature_size: int = 5, seed: int = 0
) -> Path:
    """A COCO-format corpus: ``captions[split][i]`` are image i's captions; random features."""
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    next_id = 100
    for split, per_image in captions.items():
        images = []
        for _ in per_image:
            images.append({"id": next_id, "file_name": f"img{next_id}.jpg"})
            next_id += 1
        features = torch.randn(len(per_image), feature_size, generator=generator)
        write_split(root, split, images, per_image, features)
    return root
