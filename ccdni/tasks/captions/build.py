"""The corpus command: build the MNIST-scene caption corpus and its visual cortex, once.

    python launch.py captions-corpus --data-dir ../shared/data      # or: python -m ccdni.tasks.captions.build

reads MNIST from ``DATA/MNIST/raw`` (nothing is downloaded), draws the scenes and their
reference captions (:mod:`ccdni.tasks.captions.scenes`), trains the visual cortex on the
training scenes and freezes it (:mod:`ccdni.tasks.captions.visual_cortex`), and writes the
corpus in COCO format (:mod:`ccdni.tasks.captions.coco`) to ``DATA/captions/mnist-scenes``
(``--out`` elsewhere): ``captions_SPLIT.json`` and ``features_SPLIT.npy`` per split, plus
``vocab.json``, ``images_SPLIT.npy`` (the 56×56 uint8 scenes, for figures),
``visual_cortex.pt`` (its weights, a ccdni checkpoint) and ``meta.json`` (what was built, how
well the visual cortex reads held-out scenes, how long it took). Run again with the same
options it finds the cached corpus and does nothing; ``--force`` rebuilds. Everything follows
from ``--seed``: the same seed gives the same scenes, captions and (on one machine, one
thread) the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from ccdni.tasks.captions.coco import VOCAB_FILE, missing_files, write_split
from ccdni.tasks.captions.scenes import (
    CANVAS,
    GRAMMAR_WORDS,
    REFERENCES_PER_SCENE,
    SPLITS,
    Scene,
    make_scenes,
    render,
)
from ccdni.tasks.captions.visual_cortex import extract_features, train_visual_cortex
from ccdni.tasks.captions.vocabulary import Vocabulary
from ccdni.tasks.mnist_data import DataMissingError, check_mnist

FORMAT = 1
DEFAULT_NAME = "mnist-scenes"
META_FILE = "meta.json"
log = structlog.get_logger()


def default_corpus_dir(data_dir: str | Path) -> Path:
    """Where the corpus command caches the default corpus under a data root."""
    return Path(data_dir) / "captions" / DEFAULT_NAME


def images_file(root: Path, split: str) -> Path:
    return root / f"images_{split}.npy"


@dataclass(frozen=True)
class CorpusConfig:
    """What the corpus is built from; a cached corpus is reused only for the same config."""

    seed: int = 0
    train_scenes: int = 8000
    val_scenes: int = 1000
    test_scenes: int = 1000
    cnn_epochs: int = 6
    cnn_lr: float = 2e-3

    def __post_init__(self) -> None:
        for name in ("train_scenes", "val_scenes", "test_scenes", "cnn_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.train_scenes, "val": self.val_scenes, "test": self.test_scenes}


def load_mnist_sets(data_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """MNIST's training and test sets: "train"/"test" → (images (n, 28, 28) uint8, labels)."""
    from torchvision.datasets import MNIST

    root = check_mnist(data_dir)
    sets = {}
    for name, train in (("train", True), ("test", False)):
        dataset = MNIST(str(root), train=train, download=False)
        sets[name] = (dataset.data, dataset.targets)
    return sets


def scenes_from_mnist(
    sets: dict[str, tuple[torch.Tensor, torch.Tensor]], config: CorpusConfig
) -> dict[str, list[Scene]]:
    return make_scenes(
        sets["train"][1].tolist(), sets["test"][1].tolist(), config.sizes, config.seed
    )


def image_entry(scene: Scene) -> dict[str, Any]:
    """The COCO image entry of a scene, with what it shows (for checks and figures)."""
    return {
        "id": scene.id,
        "file_name": f"scene-{scene.id:06d}",
        "width": CANVAS,
        "height": CANVAS,
        "digits": [asdict(p) for p in scene.digits],
    }


def cached(out: Path, config: CorpusConfig) -> dict[str, Any] | None:
    """The corpus's meta.json if ``out`` holds a complete corpus built with ``config``."""
    meta_path = out / META_FILE
    if not meta_path.is_file() or missing_files(out):
        return None
    meta = json.loads(meta_path.read_text())
    return meta if meta.get("format") == FORMAT and meta.get("config") == asdict(config) else None


def build_corpus(data_dir: str | Path, out: str | Path, config: CorpusConfig) -> dict[str, Any]:
    """Build the corpus into ``out`` (replacing what is there); returns its meta.json."""
    from ccdni.base.checkpoint import save_checkpoint

    started = time.perf_counter()
    out = Path(out)
    sets = load_mnist_sets(data_dir)
    scenes = scenes_from_mnist(sets, config)
    images = {name: images for name, (images, _) in sets.items()}
    canvases = {split: render(scenes[split], images) for split in SPLITS}  # (S, 56, 56) uint8
    log.info("scenes_drawn", **{split: len(scenes[split]) for split in SPLITS})
    cortex, training = train_visual_cortex(
        canvases["train"],
        scenes["train"],
        canvases["val"],
        scenes["val"],
        seed=config.seed,
        epochs=config.cnn_epochs,
        lr=config.cnn_lr,
    )
    staging = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for split in SPLITS:
        features = extract_features(cortex, canvases[split])  # (S, 256)
        entries = [image_entry(s) for s in scenes[split]]
        write_split(staging, split, entries, [list(s.captions) for s in scenes[split]], features)
        np.save(images_file(staging, split), canvases[split].numpy())
    Vocabulary.from_words(GRAMMAR_WORDS).save(staging / VOCAB_FILE)
    save_checkpoint(
        staging / "visual_cortex.pt", cortex.state_dict(), "visual_cortex", config.cnn_epochs
    )
    meta = {
        "format": FORMAT,
        "config": asdict(config),
        "scenes": {split: len(scenes[split]) for split in SPLITS},
        "references_per_scene": REFERENCES_PER_SCENE,
        "vocabulary_size": len(GRAMMAR_WORDS) + 4,
        "visual_cortex": asdict(training),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    (staging / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out)
    log.info("corpus_built", out=str(out), seconds=meta["seconds"])
    return meta


def ensure_corpus(
    data_dir: str | Path, out: str | Path, config: CorpusConfig, force: bool = False
) -> tuple[dict[str, Any], bool]:
    """(meta, built): the cached corpus in ``out`` if it matches ``config``, else a new one."""
    meta = None if force else cached(Path(out), config)
    if meta is not None:
        return meta, False
    return build_corpus(data_dir, out, config), True


def build_parser() -> argparse.ArgumentParser:
    defaults = CorpusConfig()
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="launch.py captions-corpus",
        description="Build (or find cached) the MNIST-scene caption corpus and its frozen "
        "visual cortex, in COCO format.",
    )
    parser.add_argument(
        "--data-dir",
        default="",
        help="MNIST root holding MNIST/raw (default: $CCDNI_DATA, else ./data)",
    )
    parser.add_argument(
        "--out", default="", help="corpus folder (default: DATA/captions/mnist-scenes)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="corpus seed")
    for split in SPLITS:
        parser.add_argument(
            f"--{split}-scenes", type=int, default=defaults.sizes[split], help=f"{split} scenes"
        )
    parser.add_argument(
        "--cnn-epochs", type=int, default=defaults.cnn_epochs, help="visual cortex epochs"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ccdni.base.logs import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir or os.environ.get("CCDNI_DATA", "") or "data")
    out = Path(args.out) if args.out else default_corpus_dir(data_dir)
    try:
        config = CorpusConfig(
            args.seed, args.train_scenes, args.val_scenes, args.test_scenes, args.cnn_epochs
        )
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    configure_logging("captions-corpus", None, console=True)
    torch.set_num_threads(max(1, args.threads))
    started = time.perf_counter()
    try:
        meta, built = ensure_corpus(data_dir, out, config, args.force)
    except DataMissingError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    vc = meta["visual_cortex"]
    print(
        f"{'built' if built else 'cached'}: caption corpus {out} "
        f"({', '.join(f'{n} {s}' for s, n in meta['scenes'].items())} scenes × "
        f"{meta['references_per_scene']} captions, {meta['vocabulary_size']} words); visual cortex "
        f"cell accuracy {vc['val_cell_accuracy']:.3f}, size accuracy {vc['val_size_accuracy']:.3f} "
        f"(validation); {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
