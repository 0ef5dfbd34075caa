"""The caption corpora: the MNIST-scene corpus (deterministic, disjoint splits, captions that
round-trip through the vocabulary) and the COCO-format loader, with its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from caption_helpers import DATA_DIR, ROOT, TINY, tiny_corpus, write_coco_corpus

from ccdni.tasks.captions.build import (
    CorpusConfig,
    build_parser,
    ensure_corpus,
    load_mnist_sets,
    main,
    scenes_from_mnist,
)
from ccdni.tasks.captions.coco import CorpusError, captions_file, features_file, load_corpus
from ccdni.tasks.captions.scenes import (
    GRAMMAR_WORDS,
    MAX_WORDS,
    MIN_WORDS,
    REFERENCES_PER_SCENE,
    SPLITS,
    render,
)
from ccdni.tasks.captions.task import CaptionTask
from ccdni.tasks.captions.vocabulary import EOS_ID, SPECIALS, UNK_ID, tokenize


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return tiny_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist_sets(DATA_DIR)


def test_corpus_is_deterministic(mnist) -> None:
    """The same seed gives the same scenes, captions and pixels; another seed does not."""
    config = CorpusConfig(seed=11, train_scenes=300, val_scenes=50, test_scenes=50)
    first, second = scenes_from_mnist(mnist, config), scenes_from_mnist(mnist, config)
    assert first == second
    images = {name: images for name, (images, _) in mnist.items()}
    for split in SPLITS:
        assert torch.equal(render(first[split], images), render(second[split], images))
    other = scenes_from_mnist(mnist, CorpusConfig(seed=12, train_scenes=300))
    assert [s.captions for s in other["train"]] != [s.captions for s in first["train"]]


def test_built_corpus_matches_its_seed(corpus_dir: Path, mnist) -> None:
    """The files the corpus command wrote hold exactly the scenes and captions of its seed."""
    scenes = scenes_from_mnist(mnist, TINY)
    for split in SPLITS:
        document = json.loads(captions_file(corpus_dir, split).read_text())
        assert [image["id"] for image in document["images"]] == [s.id for s in scenes[split]]
        written: dict[int, list[str]] = {}
        for note in document["annotations"]:
            written.setdefault(note["image_id"], []).append(note["caption"])
        assert written == {s.id: list(s.captions) for s in scenes[split]}
        pixels = np.load(corpus_dir / f"images_{split}.npy")
        images = {name: images for name, (images, _) in mnist.items()}
        assert np.array_equal(pixels, render(scenes[split], images).numpy())


def test_splits_share_no_digit_image(corpus_dir: Path, mnist) -> None:
    """Train and validation draw from disjoint MNIST training images, test from MNIST's test set."""
    used = {}
    for split in SPLITS:
        document = json.loads(captions_file(corpus_dir, split).read_text())
        used[split] = {(d["source"], d["index"]) for i in document["images"] for d in i["digits"]}
    assert {source for source, _ in used["train"] | used["val"]} == {"train"}
    assert {source for source, _ in used["test"]} == {"test"}
    assert not used["train"] & used["val"] and not used["train"] & used["test"]
    assert not used["val"] & used["test"]
    # at the default size too (labels only: no pixels, no visual cortex)
    big = scenes_from_mnist(mnist, CorpusConfig())
    pools = {s: {(p.source, p.index) for sc in big[s] for p in sc.digits} for s in SPLITS}
    assert not pools["train"] & pools["val"] and not (pools["train"] | pools["val"]) & pools["test"]


def test_every_scene_has_five_differently_worded_captions(corpus_dir: Path) -> None:
    """≥ 5 distinct references per scene, 4–20 words, short to long."""
    corpus = load_corpus(corpus_dir)
    lengths = []
    for split in corpus.splits.values():
        for references in split.references:
            assert len(references) == REFERENCES_PER_SCENE == len(set(references))
            lengths += [len(tokenize(r)) for r in references]
    assert MIN_WORDS <= min(lengths) <= 6 and 17 <= max(lengths) <= MAX_WORDS


def test_every_caption_decodes_back_to_its_words(corpus_dir: Path) -> None:
    """Word ids of every caption of every split decode to the caption's words."""
    corpus = load_corpus(corpus_dir)
    for split in corpus.splits.values():
        for pair in range(split.n_pairs):
            n = int(split.lengths[pair])
            ids = split.words[pair, :n].tolist() + [EOS_ID]
            caption = split.references[int(split.pair_image[pair])]
            image_pairs = (split.pair_image == split.pair_image[pair]).nonzero().flatten()
            text = caption[pair - int(image_pairs[0])]
            assert corpus.vocabulary.decode(ids) == tokenize(text) == text.split()


def test_vocabulary_covers_every_training_word(corpus_dir: Path) -> None:
    """The fixed vocabulary (specials first) holds every word of every split: no <unk>."""
    corpus = load_corpus(corpus_dir)
    assert corpus.vocabulary.words == SPECIALS + GRAMMAR_WORDS
    for split in corpus.splits.values():
        words = {w for refs in split.references for r in refs for w in tokenize(r)}
        assert all(w in corpus.vocabulary for w in words)
        assert not bool((split.words == UNK_ID).any())
    assert corpus.feature_size == 256


def test_corpus_command_finds_its_cache(corpus_dir: Path, capsys) -> None:
    """Run again with the same options the corpus command does nothing but say it is cached."""
    meta, built = ensure_corpus(DATA_DIR, corpus_dir, TINY)
    assert not built and meta["config"]["seed"] == TINY.seed
    flags = ["--out", str(corpus_dir), "--data-dir", str(DATA_DIR), "--seed", str(TINY.seed)]
    flags += ["--train-scenes", "240", "--val-scenes", "40", "--test-scenes", "30"]
    assert main([*flags, "--cnn-epochs", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"cached: caption corpus {corpus_dir}")
    assert build_parser().parse_args([]).train_scenes == CorpusConfig().train_scenes


def test_coco_loader_on_a_hand_made_fixture(tmp_path: Path) -> None:
    """COCO JSON + .npy features load: vocabulary from training counts, <unk>, 20-word cut, rows."""
    common = ["a dog on a mat", "one dog on a mat", "a cat on a mat", "the dog on a mat"]
    long = " ".join(["a dog"] * 12) + "!"  # 24 words
    root = write_coco_corpus(
        tmp_path / "coco",
        {
            "train": [common, ["A dog, on a zebra.", long]],
            "val": [["a cat on a sofa"]],
            "test": [["a dog on a mat", "a dog"]],
        },
        feature_size=7,
    )
    corpus = load_corpus(root)
    vocabulary = corpus.vocabulary
    assert vocabulary.words[:4] == SPECIALS
    assert {"a", "dog", "on", "mat"} <= set(vocabulary.words)  # seen ≥ 4 times
    assert "zebra" not in vocabulary and "cat" not in vocabulary  # rare: <unk>
    train = corpus.splits["train"]
    assert train.n_images == 2 and train.n_pairs == 6
    assert train.pair_image.tolist() == [0, 0, 0, 0, 1, 1]
    assert train.lengths.tolist() == [5, 5, 5, 5, 5, MAX_WORDS]
    assert vocabulary.decode(train.words[4].tolist()) == ["a", "dog", "on", "a", "<unk>"]
    assert train.references[1][1] == long  # the reference keeps its full text
    features = np.load(features_file(root, "train"))
    assert torch.equal(train.features, torch.from_numpy(features))
    task = CaptionTask(corpus, batch_size=3)
    batch = next(task.train_batches(0, torch.Generator().manual_seed(0)))
    assert batch.inputs.shape == (3, int(batch.score_mask.sum(1).max()) + 1, 1 + 7)


def test_bad_corpus_is_one_clear_error(tmp_path: Path) -> None:
    """A missing or malformed corpus file raises one line naming the file and the problem."""
    with pytest.raises(
        CorpusError, match=r"caption corpus not found in .*nowhere: missing captions_train.json"
    ):
        load_corpus(tmp_path / "nowhere")
    root = write_coco_corpus(tmp_path / "bad", {s: [["a dog"], ["a cat"]] for s in SPLITS})
    np.save(features_file(root, "val"), np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(
        CorpusError, match=r"features_val.npy: features of shape \(3, 5\), expected \(2, F\)"
    ):
        load_corpus(root)
    document = json.loads(captions_file(root, "test").read_text())
    document["annotations"][0]["image_id"] = 999
    captions_file(root, "test").write_text(json.dumps(document))
    np.save(features_file(root, "val"), np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(CorpusError, match="captions_test.json: an annotation names image 999"):
        load_corpus(root)
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--task",
            "captions",
            "--captions-dir",
            str(tmp_path / "none"),
        ]
        + ["--runs-dir", str(tmp_path / "runs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("launch.py: error: caption corpus not found in ") and "none" in line
    assert not (tmp_path / "runs").exists()
