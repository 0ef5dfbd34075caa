"""Per-run figures a reader understands without the code: what is drawn, not only that a file
was written (a run with a scheduled lesion, a resumed run, a run killed by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.patches import Polygon, Rectangle

from ccdni.base.rundir import RunDirectory
from ccdni.base.spec import load_spec
from ccdni.reporting.figures import (
    learning_curve_figure,
    markers,
    trajectories_figure,
)
from ccdni.reporting.plotting import plt
from orchestrator.runner import execute_run, resume_run


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def vertical_lines(ax) -> list[float]:
    """x of every vertical line (axvline) on the axes."""
    xs = []
    for line in ax.get_lines():
        x = list(line.get_xdata())
        if len(x) == 2 and x[0] == x[1] and line.get_transform() != ax.transData:
            xs.append(float(x[0]))
    return xs


@pytest.fixture(scope="module")
def lesioned_run(tmp_path_factory: pytest.TempPathFactory) -> RunDirectory:
    """A short in-process CC-DNI run whose cerebellum is ablated at epoch 6 (of 12)."""
    spec = load_spec(
        inprocess=True,
        epochs=12,
        ablate="cerebellum@epoch=6",
        runs_dir=str(tmp_path_factory.mktemp("lesion")),
        run_name="lesioned",
        progress=False,
    )
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed"
    return outcome.run


def test_lesion_is_marked_labelled_and_the_dead_cerebellum_leaves_a_gap(lesioned_run) -> None:
    """The learning curve of a lesioned run marks the lesion, shades the epochs without a
    cerebellum and breaks the cerebellar-loss line there instead of bridging it."""
    fig = learning_curve_figure(lesioned_run, "lesion test")
    top, bottom = fig.axes[0], fig.axes[1]
    assert "final validation MSE" in top.get_title()
    assert top.get_xlabel() == "" and bottom.get_xlabel() == "epoch"
    assert "validation MSE" in top.get_ylabel() and "cerebellar loss" in bottom.get_ylabel()
    labels = legend_texts(top)
    assert "validation MSE" in labels and "training loss" in labels
    assert "lesion" in labels and "no cerebellum" in labels
    assert 6.5 in vertical_lines(top) and 6.5 in vertical_lines(bottom)
    texts = [t.get_text() for t in top.texts]
    assert "cerebellum lesioned" in texts
    shaded = [
        p
        for p in top.patches + top.collections
        if isinstance(p, (Rectangle, Polygon, PolyCollection))
    ]
    assert shaded, "the epochs without a cerebellum are shaded"
    loss = next(line for line in bottom.get_lines() if "cerebellar loss" in line.get_label())
    x, y = list(loss.get_xdata()), list(loss.get_ydata())
    assert len(x) == 12
    assert all(math.isfinite(v) for v in y[:6]) and all(math.isnan(v) for v in y[6:])
    plt.close(fig)
    drawn = json.loads(lesioned_run.summary_path.read_text())["figures"]
    assert "figures/learning_curve.png" in drawn and "figures/trajectories.png" in drawn


def test_trajectories_are_coloured_by_target_with_units_legend_and_mse(lesioned_run) -> None:
    """Each cue's reach is drawn in its target's colour, named in the legend, on axes in the
    task's units, under a title with the validation MSE."""
    fig = trajectories_figure(lesioned_run, "trajectories test")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (task units)" and ax.get_ylabel() == "y (task units)"
    assert "validation MSE" in ax.get_title()
    labels = legend_texts(ax)
    assert len([t for t in labels if t.startswith("cue ")]) == 7  # the origin and 6 targets
    assert "cue -3 → its target" in labels and "cue 0 → its target" in labels
    paths = [line for line in ax.get_lines() if line.get_label().startswith("cue ")]
    assert len({line.get_color() for line in paths}) == 7
    plt.close(fig)


def test_resumed_run_marks_the_resume(tmp_path: Path) -> None:
    """A run resumed (through the processes) for more epochs gets its figures again, with a
    labelled marker where it resumed."""
    spec = load_spec(
        model="lstm",
        epochs=3,
        timing="lockstep",
        runs_dir=str(tmp_path),
        run_name="resumed",
        progress=False,
    )
    first = execute_run(spec, console=False)
    assert first.summary["status"] == "completed"
    text = first.run.spec_path.read_text().replace("epochs = 3", "epochs = 5")
    first.run.spec_path.write_text(text)  # train for longer: epochs may change on resume
    outcome = resume_run(first.run.path, console=False)
    assert outcome.summary["status"] == "completed", outcome.summary["reason"]
    run = outcome.run
    assert [m.kind for m in markers(run)] == ["resume"]
    fig = learning_curve_figure(run, "resume test")
    ax = fig.axes[0]
    assert "resume" in legend_texts(ax) and 3.5 in vertical_lines(ax)
    assert "resumed at epoch 4" in [t.get_text() for t in ax.texts]
    curve = next(line for line in ax.get_lines() if line.get_label() == "validation MSE")
    assert len(curve.get_xdata()) == 5
    plt.close(fig)
    assert (run.path / "figures" / "trajectories.png").exists()


def test_kill_by_hand_and_revival_are_placed_from_the_records(tmp_path: Path) -> None:
    """A cerebellum killed by hand (no scheduled ablation) and revived is placed where the
    area stopped, and started again, receiving predictions."""
    run = RunDirectory(tmp_path)
    for epoch in range(8):
        run.append_metric(
            {
                "region": "area0",
                "epoch": epoch,
                "train_loss": 1.0,
                "val_mse": 2.0,
                "predictions": 0 if 3 <= epoch < 6 else 4,
            }
        )
    run.append_event("lesion", region="cerebellum", detected_by="sentinel")
    run.append_event("revive", region="cerebellum", from_checkpoint=True)
    placed = markers(run, load_spec(model="cc-dni"))
    assert [(m.kind, m.at) for m in placed] == [("lesion", 3.5), ("revive", 6.5)]


def test_a_metric_in_other_units_gets_its_own_axis_and_integer_epochs(tmp_path: Path) -> None:
    """A validation error in % and a cross-entropy training loss are drawn on two labelled
    axes (one legend naming both), every epoch marked by a dot and the epoch axis in whole
    epochs."""
    run = RunDirectory(tmp_path)
    for epoch, (loss, error) in enumerate([(2.3, 80.0), (2.1, 63.5), (1.8, 57.0), (1.7, 53.8)]):
        run.append_metric(
            {"region": "area0", "epoch": epoch, "train_loss": loss, "val_error_pct": error}
        )
    fig = learning_curve_figure(run, "seqmnist test", spec=load_spec(task="seqmnist"))
    top, twin = fig.axes[0], fig.axes[-1]
    assert top.get_ylabel() == "validation error (%)"
    assert twin.get_ylabel() == "training loss (dashed)" and twin is not top
    assert legend_texts(top) == ["validation error (%)", "training loss"]
    assert all(line.get_marker() == "." for line in top.get_lines() + twin.get_lines())
    ticks = [t for t in top.get_xticks() if 0.5 <= t <= 4.5]
    assert ticks == [1, 2, 3, 4]
    plt.close(fig)


def test_multi_seed_learning_curves_draw_a_band_of_mean_and_sem_per_model(tmp_path, monkeypatch):
    """Fig. 2b's curves over seeds: one line per model at the seed mean, a shaded band of
    exactly mean ± s.e.m. (hand-computed), n in the legend, labelled axes."""
    from ccdni.reporting import style
    from ccdni.reporting import target_reaching_report as report
    from ccdni.reporting.runs import RunRecord

    values = {  # model → seed → validation MSE at epochs 0, 1
        "lstm": {0: [80.0, 70.0], 1: [82.0, 74.0], 2: [84.0, 72.0]},
        "cc-dni": {0: [60.0, 50.0], 1: [66.0, 50.0], 2: [63.0, 56.0]},
    }
    records = []
    for model, seeds in values.items():
        for seed, curve in seeds.items():
            spec = load_spec(model=model, seed=seed, inprocess=True)
            record = RunRecord(f"{model}-{seed}", None, spec, {})  # type: ignore[arg-type]
            record._curves["val_mse"] = ([0, 1], curve)
            records.append(record)
    figures = []
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.append(fig) or path)
    report.learning_curves_figure(records, tmp_path / "curves.png", "T=2")
    (ax,) = figures[0].axes
    assert ax.get_xlabel() == "epoch" and "MSE" in ax.get_ylabel()
    labels = legend_texts(ax)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for model in values:
        assert f"{style.label(model)} (n=3)" in labels, labels
    for band, seeds in zip(bands, values.values()):
        ys = band.get_paths()[0].vertices[:, 1]
        for epoch in (0, 1):
            column = [curve[epoch] for curve in seeds.values()]
            mean = sum(column) / 3
            sem = math.sqrt(sum((v - mean) ** 2 for v in column) / 2) / math.sqrt(3)
            assert any(abs(y - (mean - sem)) < 1e-9 for y in ys)
            assert any(abs(y - (mean + sem)) < 1e-9 for y in ys)
