"""How captions are scored: bits per word, and the metrics captioning researchers report.

Bits per word (BPW) is the teacher-forced cross-entropy of the true next word in bits,
averaged over every scored word: ``−(1/W) Σ log₂ p(w_t | X, w_<t)``.

BLEU-1..4, METEOR, ROUGE-L and CIDEr come from ``pycocoevalcap`` (the COCO caption evaluation
code; ``pip install -e '.[captions]'``), each scorer called on its own with the references and
the generated captions tokenised by its PTB tokenizer, exactly as its ``COCOEvalCap`` does. The
tokenizer and METEOR run Java (both ship their jars; nothing is downloaded). Where Java is not on
the PATH, METEOR is reported unavailable ("java not found") — never zero — and the other
metrics are computed on captions split into lower-case words by the corpus's own tokenizer
(which is what PTB tokenisation does to such captions). SPICE needs Stanford CoreNLP models that
pycocoevalcap downloads on first use; it is computed only when they are already installed, and
otherwise reported unavailable with that reason.

    python -m ccdni.tasks.captions.metrics runs/RUN [runs/RUN2 ...]   # score finished runs
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ccdni.tasks.captions.vocabulary import tokenize

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
INSTALL_HINT = "pycocoevalcap is not installed (pip install -e '.[captions]')"
JAVA_MISSING = "java not found"
SPICE_MODELS = "stanford-corenlp-3.6.0.jar"


def word_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-step cross-entropy in nats: logits (B, N, V), targets (B, N) → (B, N)."""
    b, n, v = logits.shape
    return F.cross_entropy(logits.reshape(b * n, v), targets.reshape(b * n), reduction="none").view(
        b, n
    )


def bits_per_word(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    """−(1/W) Σ log₂ p(target) over the W steps where ``mask`` (B, N) is True."""
    if mask.shape != targets.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} != targets {tuple(targets.shape)}")
    return float(word_losses(logits, targets)[mask].mean()) / math.log(2)


@dataclass(frozen=True)
class CaptionScores:
    """Every metric: its value, or why it is unavailable; and how captions were tokenised."""

    scores: dict[str, float]
    unavailable: dict[str, str]
    tokenizer: str
    images: int = 0
    per_image: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scores": self.scores,
            "unavailable": self.unavailable,
            "tokenizer": self.tokenizer,
            "images": self.images,
        }


def java_available() -> bool:
    return shutil.which("java") is not None


def _words(text: str) -> str:
    return " ".join(tokenize(text))


def score_captions(
    references: Mapping[Hashable, Sequence[str]], generated: Mapping[Hashable, str]
) -> CaptionScores:
    """Score one generated caption per image against that image's references."""
    if set(references) != set(generated):
        raise ValueError("references and generated captions must cover the same images")
    if not references or any(len(refs) == 0 for refs in references.values()):
        raise ValueError("every image needs at least one reference")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        return CaptionScores({}, dict.fromkeys(METRICS, INSTALL_HINT), "none", len(references))
    keys = list(references)
    java = java_available()
    if java:
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in references[k]] for k in keys})
        res = tokenizer.tokenize({k: [{"caption": generated[k]}] for k in keys})
        how = "PTB (pycocoevalcap's Stanford tokenizer)"
    else:
        gts = {k: [_words(c) for c in references[k]] for k in keys}
        res = {k: [_words(generated[k])] for k in keys}
        how = f"lower-case words ({JAVA_MISSING}: no PTB tokenizer)"
    scores: dict[str, float] = {}
    per_image: dict[str, list[float]] = {}
    unavailable: dict[str, str] = {}
    bleu, bleu_images = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        scores[f"BLEU-{n + 1}"] = float(bleu[n])
        per_image[f"BLEU-{n + 1}"] = [float(x) for x in bleu_images[n]]
    if java:
        meteor = Meteor()
        try:
            value, images = meteor.compute_score(gts, res)
        finally:
            del meteor  # closes its Java process
        scores["METEOR"], per_image["METEOR"] = float(value), [float(x) for x in images]
    else:
        unavailable["METEOR"] = JAVA_MISSING
    for name, scorer in (("ROUGE-L", Rouge()), ("CIDEr", Cider())):
        value, images = scorer.compute_score(gts, res)
        scores[name], per_image[name] = float(value), [float(x) for x in images]
    spice = _spice_unavailable(java)
    if spice is None:
        from pycocoevalcap.spice.spice import Spice

        value, _ = Spice().compute_score(gts, res)
        scores["SPICE"] = float(value)
    else:
        unavailable["SPICE"] = spice
    ordered = {name: scores[name] for name in METRICS if name in scores}
    return CaptionScores(ordered, unavailable, how, len(keys), per_image)


def _spice_unavailable(java: bool) -> str | None:
    """Why SPICE cannot run here, or None when it can (Java and its CoreNLP models present)."""
    if not java:
        return JAVA_MISSING
    import pycocoevalcap.spice as spice

    models = Path(spice.__file__).parent / "lib" / SPICE_MODELS
    if not models.is_file():
        return (
            f"needs Stanford CoreNLP models ({models.name}) that pycocoevalcap downloads on "
            "first use; not installed here"
        )
    return None


def score_run(run_dir: str | Path, area: str = "area0") -> CaptionScores:
    """Score a finished caption run's greedy test captions; writes AREA-caption-metrics.json."""
    results_dir = Path(run_dir) / "results"
    path = results_dir / f"{area}-captions.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no caption results (is it a finished captions run?)")
    captions = json.loads(path.read_text())["captions"]
    references = {c["image_id"]: c["references"] for c in captions}
    generated = {c["image_id"]: c["generated"] for c in captions}
    scores = score_captions(references, generated)
    (results_dir / f"{area}-caption-metrics.json").write_text(
        json.dumps(scores.as_dict(), indent=1) + "\n"
    )
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description="Score finished caption runs' test captions."
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    args = parser.parse_args(argv)
    for run in args.runs:
        try:
            scores = score_run(run)
        except (FileNotFoundError, ValueError) as exc:
            parser.exit(2, f"error: {exc}\n")
        values = "  ".join(f"{k} {v:.4f}" for k, v in scores.scores.items())
        missing = "; ".join(f"{k} unavailable: {why}" for k, why in scores.unavailable.items())
        print(f"{run}: {values}" + (f"  ({missing})" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
