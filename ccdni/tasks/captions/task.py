"""The caption task (``--task captions``): teacher-forced next-word prediction from an image.

A caption ``w_1 … w_n`` of an image with feature X becomes a sequence of ``N = n + 2`` steps:

    step      0      1        2     …   n+1
    input     X      <bos>    w_1   …   w_n
    target    —      w_1      w_2   …   <eos>

so at step t the area learns P(w_t | X, w_<t), with cross-entropy at every real word (the
``n + 1`` scored steps, <eos> included; step 0 and the <pad> steps after a shorter caption are
not scored). A batch is padded to its longest caption; ``Batch.score_mask`` (B, N) marks the
scored steps of each example, and the batch loss is the mean over its scored words, so that
the truncation losses add up to it and it reads directly in nats per word.

The packed input is ``(B, N, 1 + F)`` (see :mod:`ccdni.tasks.captions.area`). Validation and
test report bits per word (BPW = nats per word / ln 2, weighted by words across batches) and
the teacher-forced word accuracy; at the end of a run the area writes test BPW and greedy
captions of every test image to ``results/AREA-captions.json``, which the metrics
(:mod:`ccdni.tasks.captions.metrics`) score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from ccdni.tasks.base import Batch, Headline, Task
from ccdni.tasks.captions.area import IMAGE_STEP, CaptioningArea
from ccdni.tasks.captions.coco import CaptionCorpus, CaptionSplit, load_corpus
from ccdni.tasks.captions.metrics import word_losses
from ccdni.tasks.captions.scenes import MAX_WORDS
from ccdni.tasks.captions.vocabulary import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    from areas.cortex import AreaCore
    from ccdni.base.rundir import RunDirectory
    from ccdni.base.spec import RunSpec


def first_images(split: CaptionSplit, n_images: int) -> CaptionSplit:
    """The first ``n_images`` images of a split with all their captions (0: all)."""
    if n_images == 0 or n_images >= split.n_images:
        return split
    keep = split.pair_image < n_images  # (P,)
    return CaptionSplit(
        split.name,
        split.image_ids[:n_images],
        split.features[:n_images],
        split.references[:n_images],
        split.pair_image[keep],
        split.words[keep],
        split.lengths[keep],
    )


class CaptionTask(Task):
    """Caption generation on a COCO-format corpus (the MNIST scenes by default)."""

    name = "captions"
    loss_kind = "xent"
    headline = Headline("val_bpw", "validation bits per word")
    n_steps = MAX_WORDS + 2  # the longest sequence: image, <bos>, 20 words (<eos> is a target)

    def __init__(
        self,
        corpus: CaptionCorpus,
        batch_size: int = 100,
        captions_per_image: int = 0,
        train_images: int = 0,
        val_images: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.corpus = corpus
        self.vocabulary = corpus.vocabulary
        self.batch_size = batch_size
        self.captions_per_image = captions_per_image
        self.train = first_images(corpus.splits["train"], train_images)
        self.val = first_images(corpus.splits["val"], val_images)
        self.test = corpus.splits["test"]
        self.input_size = 1 + corpus.feature_size
        self.output_size = len(self.vocabulary)
        if self.n_train_pairs() < batch_size:
            from ccdni.base.spec import SpecError

            raise SpecError(
                f"{self.n_train_pairs()} training captions per epoch (train_subset, "
                f"captions_per_image) are fewer than batch_size={batch_size}"
            )

    # --- the area -------------------------------------------------------------------------
    def build_area(self, spec: RunSpec) -> CaptioningArea:
        return CaptioningArea(
            self.corpus.feature_size, self.output_size, spec.hidden, bias_factor=spec.bias_factor
        )

    # --- batches --------------------------------------------------------------------------
    def make_batch(self, split: CaptionSplit, pairs: torch.Tensor) -> Batch:
        """The teacher-forced batch of caption pairs ``pairs`` (B,) of ``split``."""
        rows = split.pair_image[pairs]  # (B,)
        lengths = split.lengths[pairs]  # (B,)
        n = int(lengths.max())
        words = split.words[pairs, :n]  # (B, n)
        batch = pairs.shape[0]
        steps = n + 2
        ids = torch.full((batch, steps), PAD_ID, dtype=torch.long)
        ids[:, 0] = IMAGE_STEP
        ids[:, 1] = BOS_ID
        ids[:, 2:] = words[:, : steps - 2]  # w_1..w_n as inputs at steps 2..n+1 (<pad> after)
        targets = torch.full((batch, steps), PAD_ID, dtype=torch.long)
        targets[:, 1 : n + 1] = words
        targets[torch.arange(batch), lengths + 1] = EOS_ID
        position = torch.arange(steps).unsqueeze(0)  # (1, N)
        mask = (position >= 1) & (position <= lengths.unsqueeze(1) + 1)  # (B, N)
        inputs = torch.zeros(batch, steps, self.input_size)
        inputs[..., 0] = ids.float()
        inputs[:, 0, 1:] = split.features[rows]
        return Batch(inputs, targets, mask.any(dim=0), rows, score_mask=mask)

    def n_train_pairs(self) -> int:
        if self.captions_per_image == 0:
            return self.train.n_pairs
        counts = torch.bincount(self.train.pair_image, minlength=self.train.n_images)
        return int(counts.clamp(max=self.captions_per_image).sum())

    def n_train_batches(self) -> int:
        return self.n_train_pairs() // self.batch_size

    def epoch_pairs(self, generator: torch.Generator) -> torch.Tensor:
        """The epoch's training pairs in a fresh random order: every pair, or
        ``captions_per_image`` captions of every image drawn afresh."""
        split = self.train
        if self.captions_per_image == 0:
            return torch.randperm(split.n_pairs, generator=generator)
        keys = split.pair_image.double() + torch.rand(
            split.n_pairs, generator=generator, dtype=torch.float64
        )  # sorts by image, then randomly within an image
        order = keys.argsort()
        counts = torch.bincount(split.pair_image, minlength=split.n_images)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(split.n_pairs) - starts[split.pair_image[order]]
        chosen = order[rank < self.captions_per_image]
        return chosen[torch.randperm(chosen.shape[0], generator=generator)]

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        """Full batches of the epoch's pairs (the rest is dropped)."""
        pairs = self.epoch_pairs(generator)
        for i in range(self.n_train_batches()):
            yield self.make_batch(
                self.train, pairs[i * self.batch_size : (i + 1) * self.batch_size]
            )

    def split_batches(self, split: CaptionSplit) -> Iterator[Batch]:
        """Every pair of a split in its fixed order (the last batch may be partial)."""
        for start in range(0, split.n_pairs, self.batch_size):
            stop = min(start + self.batch_size, split.n_pairs)
            yield self.make_batch(split, torch.arange(start, stop))

    def validation_batches(self) -> Iterator[Batch]:
        return self.split_batches(self.val)

    def test_batches(self) -> Iterator[Batch]:
        return self.split_batches(self.test)

    # --- scores ---------------------------------------------------------------------------
    def evaluate(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Nats per word (``loss``), bits per word and word accuracy (%) over the scored words."""
        mask = batch.score_mask
        nats = word_losses(outputs, batch.targets)[mask]  # (words,)
        correct = (outputs.argmax(dim=-1) == batch.targets)[mask]
        loss = float(nats.mean())
        return {
            "loss": loss,
            "bpw": loss / math.log(2),
            "word_accuracy": 100 * float(correct.float().mean()),
        }

    def evaluation_weight(self, batch: Batch) -> int:
        return int(batch.score_mask.sum())  # per word: BPW over a split is Σ bits / Σ words

    @torch.no_grad()
    def split_scores(
        self, area: CaptioningArea, batches: Iterator[Batch], device
    ) -> dict[str, float]:
        """BPW, nats per word and word accuracy over a split (area in eval mode)."""
        totals = {"loss": 0.0, "bpw": 0.0, "word_accuracy": 0.0}
        words = 0
        for batch in batches:
            batch = batch.to(device)
            outputs, _, _ = area(batch.inputs, area.initial_state(batch.size, device))
            weight = self.evaluation_weight(batch)
            for key, value in self.evaluate(outputs, batch).items():
                totals[key] += value * weight
            words += weight
        return {**{k: v / words for k, v in totals.items()}, "words": words}

    @torch.no_grad()
    def generate(self, area: CaptioningArea, split: CaptionSplit, device) -> list[str]:
        """Greedy captions of every image of a split (area in eval mode)."""
        captions = []
        for start in range(0, split.n_images, 500):
            ids = area.greedy(split.features[start : start + 500].to(device)).cpu()
            captions += [" ".join(self.vocabulary.decode(row.tolist())) for row in ids]
        return captions

    def write_results(self, core: AreaCore, run: RunDirectory) -> dict[str, Any]:
        """Test and validation BPW and greedy test captions → ``results/AREA-captions.json``."""
        area = core.area
        area.eval()
        test = self.split_scores(area, self.test_batches(), core.device)
        val = self.split_scores(area, self.validation_batches(), core.device)
        generated = self.generate(area, self.test, core.device)
        area.train()
        results = {
            "task": self.name,
            "corpus": str(self.corpus.root),
            "vocabulary_size": len(self.vocabulary),
            "epochs": core.epoch,
            **{f"test_{k}": v for k, v in test.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "captions": [
                {"image_id": image, "generated": text, "references": list(refs)}
                for image, text, refs in zip(self.test.image_ids, generated, self.test.references)
            ],
        }
        path = run.results_path(f"{core.interface}-captions.json")
        path.write_text(json.dumps(results, indent=1) + "\n")
        return results


def build_caption_task(spec: RunSpec) -> CaptionTask:
    """The caption task on the spec's corpus (``captions_dir``, or the cached MNIST scenes)."""
    hint = (
        "build the MNIST-scene corpus with: python launch.py captions-corpus --data-dir "
        f"{spec.resolved_data_dir}"
        if not spec.captions_dir
        else "a COCO-format corpus folder needs captions_SPLIT.json and features_SPLIT.npy "
        "for SPLIT in train, val, test"
    )
    corpus = load_corpus(spec.resolved_captions_dir, hint)
    return CaptionTask(
        corpus, spec.batch_size, spec.captions_per_image, spec.train_subset, spec.val_subset
    )
