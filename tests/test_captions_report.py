"""The caption results page: tables, best T, paired differences and figures from a sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ccdni.base.spec import load_spec, to_toml
from ccdni.reporting.captions_report import (
    BEGIN,
    END,
    best_truncation,
    bpw_table,
    load_runs,
    paired_table,
    write_report,
)

OFFSET = {"lstm": 0.3, "cc-dni": 0.0}


def fake_sweep(root: Path) -> tuple[Path, Path]:
    """A sweep folder and a corpus folder as the caption experiment leaves them (made-up numbers)."""
    corpus = root / "corpus"
    corpus.mkdir()
    meta = {
        "scenes": {"train": 4, "val": 2, "test": 3},
        "references_per_scene": 2,
        "vocabulary_size": 9,
        "config": {"seed": 0},
        "visual_cortex": {"epochs": 1, "val_cell_accuracy": 0.9, "val_size_accuracy": 0.95},
        "seconds": 12.0,
    }
    (corpus / "meta.json").write_text(json.dumps(meta))
    np.save(corpus / "images_test.npy", np.zeros((3, 56, 56), dtype=np.uint8))
    sweep = root / "sweep"
    rows = []
    for model in OFFSET:
        for t in (2, 4):
            for seed in (0, 1):
                name = f"model={model}_truncation={t}_seed={seed}"
                run = sweep / "runs" / name
                (run / "results").mkdir(parents=True)
                spec = load_spec(task="captions", model=model, truncation=t, seed=seed, epochs=2)
                (run / "spec.toml").write_text(to_toml(spec))
                final = 2.0 + OFFSET[model] + (0.5 if t == 2 else 0.0) + 0.1 * seed
                curve = [final + 1.0, final]
                lines = [{"region": "area0", "epoch": e, "val_bpw": v} for e, v in enumerate(curve)]
                (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
                captions = [
                    {"image_id": i, "generated": "a two", "references": ["a two", "two digits"]}
                    for i in range(3)
                ]
                results = {"test_bpw": final + 0.05, "captions": captions}
                (run / "results" / "area0-captions.json").write_text(json.dumps(results))
                scores = {
                    "scores": {"BLEU-1": 0.5 + seed, "CIDEr": 1.0},
                    "unavailable": {"SPICE": "no models"},
                }
                (run / "results" / "area0-caption-metrics.json").write_text(json.dumps(scores))
                rows.append({"name": name, "status": "completed", "wall_seconds": 30})
    with open(sweep / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return sweep, corpus


def test_caption_report_tables_and_figures(tmp_path: Path) -> None:
    """BPW vs T, paired differences, best T and the metric table come out of the sweep."""
    sweep, corpus = fake_sweep(tmp_path)
    runs = load_runs(sweep)
    assert len(runs) == 8 and best_truncation(runs) == 4
    assert "| 4 | 2.400 ± 0.050 (n=2) | 2.100 ± 0.050 (n=2) |" in bpw_table(runs)
    assert "| 2 | -0.300 ± 0.000 (2/2 lower) |" in paired_table(runs, "test_bpw")
    doc = tmp_path / "docs" / "results-captions.md"
    doc.parent.mkdir()
    doc.write_text(f"# Title\n\nprose kept\n\n{BEGIN}\nold\n{END}\n\nmore prose\n")
    written = write_report(sweep, corpus, doc, tmp_path / "docs" / "figures", "test", ["cmd"], "c")
    text = doc.read_text()
    assert "prose kept" in text and "more prose" in text and "\nold\n" not in text
    assert "best T = 4" in text and "| CC-DNI (n=2) | 1.0000 ± 0.5000 |" in text
    assert "- SPICE unavailable: no models" in text
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 3 and all(0 < p.stat().st_size < 400_000 for p in pngs)
