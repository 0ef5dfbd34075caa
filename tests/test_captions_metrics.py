"""The caption metric wrapper against pycocoevalcap's own scorers, and what it reports when
Java, SPICE's models or pycocoevalcap itself are missing."""

from __future__ import annotations

import builtins
import shutil

import pytest

from ccdni.tasks.captions import metrics
from ccdni.tasks.captions.metrics import METRICS, score_captions
from ccdni.tasks.captions.vocabulary import tokenize

pytest.importorskip("pycocoevalcap", reason="the captions extra: pip install -e '.[captions]'")

REFERENCES = {
    1: ["a seven above a two", "a small two under a large seven", "two digits seven and two"],
    2: ["a nine to the left of a four", "the digit nine is left of the digit four"],
    3: ["an eight and a one", "a big eight over a tiny one", "there is an eight above a one"],
}
GENERATED = {1: "a seven above a two", 2: "a nine next to a four", 3: "a one below an eight"}


def library_scores(gts: dict, res: dict, meteor: bool) -> dict[str, float]:
    """What pycocoevalcap's scorers give, called as its COCOEvalCap calls them."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{n + 1}": bleu[n] for n in range(4)}
    out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        out["METEOR"] = scorer.compute_score(gts, res)[0]
        del scorer
    return out


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java (PTB tokenizer, METEOR)")
def test_metrics_are_pycocoevalcaps_own() -> None:
    """With Java: PTB-tokenised BLEU-1..4, METEOR, ROUGE-L, CIDEr equal the library's numbers."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in GENERATED.items()})
    want = library_scores(gts, res, meteor=True)
    got = score_captions(REFERENCES, GENERATED)
    assert set(got.scores) == set(METRICS) - {"SPICE"}
    for name, value in want.items():
        assert got.scores[name] == pytest.approx(value, abs=1e-12), name
    assert got.scores["BLEU-1"] > got.scores["BLEU-4"] > 0 and got.scores["METEOR"] > 0
    assert got.tokenizer.startswith("PTB") and got.images == 3
    assert got.per_image["CIDEr"][0] > got.per_image["CIDEr"][2]  # an exact match scores highest


def test_meteor_unavailable_without_java(monkeypatch, tmp_path) -> None:
    """Java hidden from the PATH: METEOR (and SPICE) 'unavailable: java not found', never zero;
    the others are the library's numbers on lower-case word captions."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java
    assert shutil.which("java") is None
    got = score_captions(REFERENCES, GENERATED)
    assert "METEOR" not in got.scores and got.unavailable["METEOR"] == "java not found"
    assert got.unavailable["SPICE"] == "java not found"
    gts = {k: [" ".join(tokenize(c)) for c in v] for k, v in REFERENCES.items()}
    res = {k: [" ".join(tokenize(v))] for k, v in GENERATED.items()}
    for name, value in library_scores(gts, res, meteor=False).items():
        assert got.scores[name] == pytest.approx(value, abs=1e-12), name
    assert "java not found" in got.tokenizer


def test_spice_is_reported_unavailable_without_its_models(monkeypatch) -> None:
    """SPICE needs CoreNLP models pycocoevalcap would download: reported unavailable, not run."""
    monkeypatch.setattr(metrics, "SPICE_MODELS", "no-such-models.jar")
    reason = metrics._spice_unavailable(java=True)
    assert reason is not None and "no-such-models.jar" in reason and "download" in reason


def test_without_pycocoevalcap_every_metric_says_so(monkeypatch) -> None:
    """Without the captions extra each metric is unavailable with the install hint."""
    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.startswith("pycocoevalcap"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    got = score_captions(REFERENCES, GENERATED)
    assert got.scores == {} and set(got.unavailable) == set(METRICS)
    assert all("pip install -e '.[captions]'" in why for why in got.unavailable.values())
    with pytest.raises(ValueError, match="same images"):
        score_captions(REFERENCES, {1: "a seven"})
