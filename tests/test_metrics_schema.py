"""metrics.jsonl follows its documented schema (docs/architecture.md): every row names its
region and its kind, ``epoch`` rows carry their 0-based epoch, ``final`` rows none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccdni.base.rundir import (
    METRIC_KINDS,
    MetricSchemaError,
    RunDirectory,
    check_metric,
    tag_metric,
)
from ccdni.base.spec import load_spec
from orchestrator.runner import execute_run

ROOT = Path(__file__).resolve().parents[1]


def rows(run: RunDirectory) -> list[dict]:
    return [json.loads(line) for line in run.metrics_path.read_text().splitlines()]


def assert_schema(run: RunDirectory, regions: set[str], epochs: int) -> None:
    """Every row is valid; each region has one epoch row per epoch, then final rows."""
    records = rows(run)
    for record in records:
        check_metric(record)
        assert list(record)[:2] == ["region", "kind"]
    assert "epoch" in {r["kind"] for r in records}
    assert {r["region"] for r in records} == regions
    area = [r["epoch"] for r in records if r["region"] == "area0" and r["kind"] == "epoch"]
    assert area == list(range(epochs))
    for record in records:
        if record["kind"] == "final":
            assert not any(k.startswith("val_") for k in record), record
    # the reader agrees with the tag
    assert [r["epoch"] for r in run.epoch_records("area0")] == list(range(epochs))
    assert all(r["kind"] == "final" for r in run.final_records())


@pytest.mark.parametrize("inprocess", [True, False], ids=["in-process", "processes"])
def test_every_row_of_a_run_follows_the_schema(tmp_path: Path, inprocess: bool) -> None:
    """An in-process run and a run as processes write only schema-valid rows: epoch rows of
    the area and olive, and (as processes) the cerebellum's epoch rows and the cerebellum's
    and olive's end-of-run totals."""
    spec = load_spec(
        epochs=3,
        inprocess=inprocess,
        timing="lockstep",
        runs_dir=str(tmp_path),
        run_name="schema",
        progress=False,
        figures=False,
    )
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed", outcome.summary["reason"]
    regions = {"area0", "olive"} | (set() if inprocess else {"cerebellum"})
    assert_schema(outcome.run, regions, 3)
    finals = {r["region"] for r in rows(outcome.run) if r["kind"] == "final"}
    assert finals == (set() if inprocess else {"cerebellum", "olive"})
    assert {r["kind"] for r in rows(outcome.run)} <= set(METRIC_KINDS)


def test_the_kind_is_inferred_and_checked() -> None:
    """A row with an integer epoch is tagged ``epoch``, one without ``final``; malformed rows
    (no region, an unknown kind, an epoch row without its epoch, a final row with one) are
    refused with the field named."""
    assert tag_metric({"region": "area0", "epoch": 2, "train_loss": 1.0})["kind"] == "epoch"
    assert tag_metric({"region": "olive", "errors_sent": 4})["kind"] == "final"
    for bad, text in (
        ({"kind": "epoch", "epoch": 0}, "without a region"),
        ({"region": "area0", "kind": "total"}, "kind 'total'"),
        ({"region": "area0", "kind": "epoch"}, "epoch None"),
        ({"region": "area0", "kind": "epoch", "epoch": -1}, "epoch -1"),
        ({"region": "olive", "kind": "final", "epoch": 3}, "with an epoch"),
    ):
        with pytest.raises(MetricSchemaError, match=text):
            check_metric(bad)


def test_rows_written_before_the_kind_existed_are_read_alike(tmp_path: Path) -> None:
    """An older metrics.jsonl without ``kind`` is read the same: rows with an epoch are epoch
    records, the others end-of-run records."""
    old = [
        {"region": "area0", "epoch": 0, "train_loss": 2.0, "val_mse": 3.0},
        {"region": "area0", "epoch": 1, "train_loss": 1.0, "val_mse": 2.0},
        {"region": "olive", "errors_sent": 8},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    run = RunDirectory(tmp_path)
    assert run.series("val_mse") == ([0, 1], [3.0, 2.0])
    assert run.final_records() == [old[2]]


def test_the_schema_is_documented() -> None:
    """docs/architecture.md documents every kind and the fields a reader relies on."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.partition("## metrics.jsonl")[2]
    assert section, "docs/architecture.md has no metrics.jsonl section"
    for word in ('"kind"', '"epoch"', '"final"', '"region"', "train_loss", "cerebellar_loss"):
        assert word in section, word
