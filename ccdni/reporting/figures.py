"""PNG figures of one run directory, readable without the code.

- ``learning_curve.png``: the task's validation metric and the training loss per epoch, with a
  vertical, labelled line for every lesion, revival and resume (from ``events.jsonl``), the
  epochs without a cerebellum shaded, and the cerebellar loss below — broken (not bridged)
  where the cerebellum or the olive was dead;
- ``trajectories.png`` (target reaching, paper Fig. 2a): each cue's reach coloured by its
  target, the targets in the same colours, axes in the task's units, a legend, the final
  validation MSE in the title;
- ``drawings.png`` (c-, dd-, ld-seqMNIST, paper Fig. 3a).

:func:`draw_run` draws whichever apply; ``orchestrator.runner.execute_run`` calls it for every
run that ends with at least one epoch, however it ends. A run stopped before the area saved
its arrays gets them from the area's last checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import torch
from matplotlib.ticker import MaxNLocator

from ccdni.base.rundir import RunDirectory
from ccdni.reporting import style
from ccdni.reporting.plotting import plt
from ccdni.reporting.style import DIGIT_COLOURS, EVENT_STYLES

if TYPE_CHECKING:
    from ccdni.base.spec import RunSpec

MODEL_COLOURS = style.MODEL_COLOURS  # kept for callers of the old name
VALIDATION_KEYS = ("val_mse_x100", "val_mse", "val_error_pct", "val_accuracy", "val_bpw")
LABELS = {
    "val_mse": "validation MSE",
    "val_mse_x100": "validation MSE ×100",
    "val_error_pct": "validation error (%)",
    "val_accuracy": "validation accuracy",
    "val_bpw": "validation bits per word",
}


# --- what happened during a run ------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """An event drawn on a learning curve: between epochs ``at`` and ``at + 1`` (1-based x)."""

    at: float  # x position (epochs are drawn at 1, 2, …; a lesion before epoch E+1 at E+0.5)
    kind: str  # "lesion", "revive" or "resume"
    text: str


def _epoch_of_event(event: dict[str, Any]) -> int | None:
    epoch = event.get("epoch")
    return int(epoch) if isinstance(epoch, int) else None


def _cerebellum_used(run: RunDirectory, spec: RunSpec | None) -> bool:
    if spec is not None:
        return bool(spec.uses_cerebellum)
    return bool(run.epoch_records("olive"))


def dead_epochs(run: RunDirectory, spec: RunSpec | None = None) -> list[int]:
    """0-based epochs in which the area got no prediction at all although its model has a
    cerebellum (a lesioned cerebellum): ``predictions == 0`` (or ``cerebellum_alive`` false)."""
    if not _cerebellum_used(run, spec):
        return []
    dead = []
    for record in run.epoch_records():
        if record.get("cerebellum_alive") is False or record.get("predictions") == 0:
            dead.append(record["epoch"])
    return dead


def markers(run: RunDirectory, spec: RunSpec | None = None) -> list[Marker]:
    """Lesions, revivals and resumes of a run, placed on the epoch axis.

    A scheduled or commanded lesion (``ablate``) and a resume carry their epoch (the one about
    to start). A region killed by hand (``lesion`` with no ``ablate`` before it) and a revival
    carry none: they are placed where the records show it — the first epoch without
    predictions (cerebellum) or without olive records (olive), and the first epoch with them
    again.
    """
    out: list[Marker] = []
    area_epochs = [r["epoch"] for r in run.epoch_records()]
    last = area_epochs[-1] if area_epochs else 0
    olive_epochs = {r["epoch"] for r in run.epoch_records("olive")}
    dead = set(dead_epochs(run, spec))
    ablated: set[str] = set()
    down: dict[str, int] = {}  # region → epoch of its lesion

    def absent(region: str, epoch: int) -> bool:
        return epoch in dead if region == "cerebellum" else epoch not in olive_epochs

    for event in run.events_named("ablate", "lesion", "revive", "resume"):
        name, region = event.get("event"), str(event.get("region", ""))
        if name == "resume":
            epoch = _epoch_of_event(event) or 0
            out.append(Marker(epoch + 0.5, "resume", f"resumed at epoch {epoch + 1}"))
        elif name == "ablate":
            given = _epoch_of_event(event)
            if given is None:
                given = next((e for e in area_epochs if absent(region, e)), last)
            epoch = given
            ablated.add(region)
            down[region] = epoch
            out.append(Marker(epoch + 0.5, "lesion", f"{region} lesioned"))
        elif name == "lesion" and region not in ablated and region:
            start = max(down.values(), default=0)
            epoch = next((e for e in area_epochs if e >= start and absent(region, e)), last)
            down[region] = epoch
            out.append(Marker(epoch + 0.5, "lesion", f"{region} died"))
        elif name == "revive":
            since = down.pop(region, 0)
            ablated.discard(region)
            epoch = next((e for e in area_epochs if e > since and not absent(region, e)), last + 1)
            out.append(Marker(epoch + 0.5, "revive", f"{region} revived"))
    return out


def _contiguous(epochs: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for e in sorted(epochs):
        if spans and e == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], e)
        else:
            spans.append((e, e))
    return spans


def _on_axis(epochs: list[int], values: list[float], upto: int) -> tuple[list, list]:
    """x = 1..upto with NaN where no value was recorded, so a line breaks at gaps."""
    by_epoch = dict(zip(epochs, values))
    xs = list(range(1, upto + 1))
    return xs, [by_epoch.get(x - 1, math.nan) for x in xs]


def _load_spec(run: RunDirectory) -> RunSpec | None:
    try:
        return run.spec()
    except Exception:  # an unreadable or older spec: draw what the records allow
        return None


def headline_key(run: RunDirectory, spec: RunSpec | None, records: list[dict]) -> str | None:
    """The validation metric to draw: the task's headline, else the first ``val_*`` found."""
    if spec is not None:
        try:
            from ccdni.tasks.base import headline

            key = headline(spec).metric
            if any(key in r for r in records):
                return key
        except Exception:  # an unknown task: fall back to the keys present
            pass
    return next((k for k in VALIDATION_KEYS if any(k in r for r in records)), None)


# --- the learning curve ------------------------------------------------------------------------


def learning_curve(
    run: RunDirectory,
    title: str,
    colour: str = "tab:orange",
    spec: RunSpec | None = None,
    status: str | None = None,
) -> Path | None:
    """``figures/learning_curve.png`` (see :func:`learning_curve_figure`)."""
    fig = learning_curve_figure(run, title, colour, spec, status)
    if fig is None:
        return None
    path = run.figure_path("learning_curve.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve_figure(
    run: RunDirectory,
    title: str,
    colour: str = "tab:orange",
    spec: RunSpec | None = None,
    status: str | None = None,
) -> Any:
    """Validation metric and training loss per epoch (markers for lesions, revivals, resumes;
    dead cerebellum shaded); the cerebellar loss below when the model has one. None when the
    run recorded no epoch."""
    spec = spec if spec is not None else _load_spec(run)
    area = run.epoch_records(key="train_loss")
    if not area:
        return None
    upto = max(r["epoch"] for r in area) + 1
    key = headline_key(run, spec, area)
    olive = [r for r in run.epoch_records("olive") if _cerebellar_losses(r)]
    rows = 2 if olive else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6.4, 3.3 * rows), sharex=True, squeeze=False)
    ax = axes[0, 0]
    dots = {"marker": ".", "ms": 5} if upto <= 40 else {}  # a lone epoch is still seen
    if key:
        xs, ys = _on_axis(*run.series(key), upto)
        ax.plot(xs, ys, color=colour, label=LABELS.get(key, key), **dots)
    # the training loss shares the axis only when it is in the validation metric's units
    same_units = key in (None, "val_mse", "val_loss")
    loss_ax = ax if same_units else ax.twinx()
    xs, ys = _on_axis(*run.series("train_loss"), upto)
    loss_ax.plot(xs, ys, color=colour, alpha=0.45, ls="--", label="training loss", **dots)
    if same_units:
        ax.set_ylabel(LABELS.get(key or "", "task loss") + " / training loss")
    else:
        ax.set_ylabel(LABELS.get(key or "", key or ""))
        loss_ax.set_ylabel("training loss (dashed)")
    final = [r[key] for r in area if key in r] if key else []
    heading = title
    if final:
        heading += f"\nfinal {LABELS.get(key or '', key)}: {final[-1]:.3g}"
    if status and status != "completed":
        heading += f" ({status} after {len(area)} epochs)"
    ax.set_title(heading, fontsize=10)
    dead = dead_epochs(run, spec)
    for i, (low, high) in enumerate(_contiguous(dead)):
        for row in range(rows):
            axes[row, 0].axvspan(
                low + 0.5,
                high + 1.5,
                color="tab:red",
                alpha=0.08,
                lw=0,
                label="no cerebellum" if (i == 0 and row == 0) else None,
            )
    drawn: set[str] = set()
    for marker in markers(run, spec):
        look = EVENT_STYLES.get(marker.kind, {"color": "black", "ls": ":"})
        for row in range(rows):
            axes[row, 0].axvline(
                marker.at,
                lw=1.2,
                label=marker.kind if (row == 0 and marker.kind not in drawn) else None,
                **look,
            )
        drawn.add(marker.kind)
        ax.annotate(
            marker.text,
            (marker.at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=7,
            color=look["color"],
        )
    handles, labels = ax.get_legend_handles_labels()
    if loss_ax is not ax:
        more = loss_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, frameon=False, fontsize=8)
    if olive:
        ax2 = axes[1, 0]
        interfaces = sorted({name for m in olive for name in _cerebellar_losses(m)})
        for i, name in enumerate(interfaces):
            points = [(m["epoch"], _cerebellar_losses(m).get(name)) for m in olive]
            kept = [(e, float(v)) for e, v in points if v is not None and v > 0]
            if not kept:
                continue
            xs, ys = _on_axis([e for e, _ in kept], [v for _, v in kept], upto)
            ax2.plot(
                xs,
                ys,
                color="tab:purple" if len(interfaces) == 1 else f"C{i}",
                label=f"cerebellar loss ({name})" if name else "cerebellar loss",
                **dots,
            )
        ax2.legend(frameon=False, fontsize=7)
        ax2.set_ylabel("cerebellar loss $L_C$")
        ax2.set_yscale("log")
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].set_xlim(0.5, upto + 0.5)
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def _cerebellar_losses(record: dict) -> dict[str, float | None]:
    """The olive record's cerebellar losses: {"": L_C} for one interface, or one per chain
    interface ("cerebellar_loss/boundary0" → "boundary0")."""
    out: dict[str, float | None] = {}
    for key, value in record.items():
        if key == "cerebellar_loss":
            out[""] = value
        elif key.startswith("cerebellar_loss/"):
            out[key.partition("/")[2]] = value
    if len(out) > 1:
        out.pop("", None)  # the per-interface curves say more than their mean
    return out


# --- reach trajectories ------------------------------------------------------------------------


def cue_names(spec: RunSpec | None, n_classes: int) -> list[str]:
    """What each target class is cued by: "cue 0" (the origin), "cue −3" … for integer cues."""
    if spec is not None and spec.task == "target-reaching":
        from ccdni.tasks.target_reaching import integer_cues

        if spec.cue in ("integer", "integer-x0.1"):
            scale = 0.1 if spec.cue == "integer-x0.1" else 1.0
            values = [0, *integer_cues(n_classes - 1)]
            return [f"cue {scale * v:+g}".replace("+0", "0") for v in values]
        if spec.cue == "2d":
            return ["cue (0, 0)"] + [f"cue = target {c} × 0.1" for c in range(1, n_classes)]
    return [f"class {c}" for c in range(n_classes)]


def target_colours(n_classes: int) -> list[str]:
    """Class 0 (the origin) black, the targets around the circle in distinct colours."""
    palette = [c for c in DIGIT_COLOURS if c != "black"]
    return ["black"] + [palette[(c - 1) % len(palette)] for c in range(1, n_classes)]


def draw_trajectories(
    ax: Any, data: dict, spec: RunSpec | None = None, legend: bool = True, lw: float = 1.6
) -> None:
    """Reach paths from the origin, each in its cue's target colour, onto ``ax``."""
    outputs, targets, labels = data["outputs"], data["targets"], data["labels"]
    colours = target_colours(targets.shape[0])
    names = cue_names(spec, targets.shape[0])
    for c in range(targets.shape[0]):
        ax.scatter(
            targets[c, 0],
            targets[c, 1],
            s=190,
            facecolors="none",
            edgecolors=colours[c],
            lw=1.6,
            zorder=2,
        )
    shown: set[int] = set()
    for i, label in enumerate(labels.tolist()):
        path = torch.cat([torch.zeros(1, 2), outputs[i].float()], dim=0)
        ax.plot(
            path[:, 0],
            path[:, 1],
            color=colours[label],
            lw=lw,
            alpha=0.9,
            marker=".",
            ms=3,
            label=f"{names[label]} → its target" if label not in shown else None,
        )
        ax.scatter(path[-1, 0], path[-1, 1], color=colours[label], s=22, zorder=3)
        shown.add(label)
    ax.scatter([], [], s=120, facecolors="none", edgecolors="grey", label="target (radius 10)")
    ax.set_aspect("equal")
    ax.set_xlim(-13.5, 13.5)
    ax.set_ylim(-13.5, 13.5)
    ax.set_xlabel("x (task units)")
    ax.set_ylabel("y (task units)")
    ax.axhline(0, color="grey", lw=0.4)
    ax.axvline(0, color="grey", lw=0.4)
    if legend:
        ax.legend(fontsize=6.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))


def trajectories(
    run: RunDirectory, title: str, colour: str = "tab:orange", spec: RunSpec | None = None
) -> Path | None:
    """``figures/trajectories.png`` (see :func:`trajectories_figure`)."""
    fig = trajectories_figure(run, title, spec)
    if fig is None:
        return None
    out = run.figure_path("trajectories.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def trajectories_figure(run: RunDirectory, title: str, spec: RunSpec | None = None) -> Any:
    """Reach trajectories towards every target (paper Fig. 2a), coloured by target; None when
    the run saved none."""
    files = sorted(run.path.joinpath("results").glob("*-trajectories.pt"))
    if not files:
        return None
    spec = spec if spec is not None else _load_spec(run)
    data = torch.load(files[0], weights_only=True)
    fig, ax = plt.subplots(figsize=(6.6, 4.6))
    draw_trajectories(ax, data, spec)
    records = run.epoch_records(key="val_mse")
    heading = title
    if records:
        heading += f"\nvalidation MSE {records[-1]['val_mse']:.1f} after epoch {len(records)}"
    ax.set_title(heading, fontsize=10)
    fig.tight_layout()
    return fig


# --- seqMNIST drawings -------------------------------------------------------------------------


def draw_templates(
    axes: list, paths: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor
) -> None:
    """dd-seqMNIST on 10 axes, one per digit: the template ``paths`` (10, N, 2) dotted grey
    (its start marked), the outputs (E, N, 2) of the examples of that digit in its colour."""
    for digit, ax in enumerate(axes):
        ax.plot(paths[digit, :, 0], paths[digit, :, 1], ls=":", color="grey", lw=1.5)
        ax.scatter(paths[digit, 0, 0], paths[digit, 0, 1], color="grey", s=10, marker="s")
        for i in (labels == digit).nonzero().flatten().tolist():
            ax.plot(outputs[i, :, 0], outputs[i, :, 1], color=DIGIT_COLOURS[digit], alpha=0.8)
        ax.set_title(str(digit), fontsize=9)
        ax.set_xlim(-0.25, 1.25)
        ax.set_ylim(-0.25, 1.25)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])


def draw_circle(
    ax, task: str, paths: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor
) -> None:
    """c-seqMNIST final points, or ld-seqMNIST lines (targets dotted grey), against the 10
    circle targets, coloured by digit; ``paths`` (10, N, 2), ``outputs`` (E, N, 2)."""
    ends = paths[:, -1]  # (10, 2): the circle points
    ax.scatter(ends[:, 0], ends[:, 1], s=220, facecolors="none", edgecolors="grey", lw=1.2)
    for digit in range(ends.shape[0]):
        ax.annotate(str(digit), (1.2 * ends[digit]).tolist(), ha="center", va="center")
        if task == "ld-seqmnist":
            ax.plot(paths[digit, :, 0], paths[digit, :, 1], ls=":", color="grey", lw=1.2)
    for i, digit in enumerate(labels.tolist()):
        colour = DIGIT_COLOURS[digit]
        if task == "ld-seqmnist":
            ax.plot(outputs[i, :, 0], outputs[i, :, 1], color=colour, alpha=0.8)
        else:  # c-seqMNIST: only the last step is scored; the path is shown faintly
            ax.plot(outputs[i, :, 0], outputs[i, :, 1], color=colour, alpha=0.15, lw=0.8)
            ax.scatter(outputs[i, -1, 0], outputs[i, -1, 1], color=colour, s=22, zorder=3)
    ax.set_aspect("equal")
    ax.set_xlim(-13.5, 13.5)
    ax.set_ylim(-13.5, 13.5)
    ax.set_xlabel("x (task units)")
    ax.set_ylabel("y (task units)")


def draw_examples(axes: list, data: dict) -> None:
    """The saved examples of a seqMNIST drawing task (``AREA-examples.pt``) onto ``axes``:
    10 axes for dd-seqMNIST (one per digit), one axis for c- and ld-seqMNIST."""
    task, paths = data["task"], data["paths"]
    if task == "dd-seqmnist":
        draw_templates(axes, paths, data["outputs"], data["labels"])
    else:
        draw_circle(axes[0], task, paths, data["outputs"], data["labels"])


def drawings(run: RunDirectory, title: str) -> Path | None:
    """The seqMNIST drawings of validation examples (paper Fig. 3a): dd- against the
    templates, ld- against the lines, c- final points against the circle targets."""
    files = sorted(run.path.joinpath("results").glob("*-examples.pt"))
    if not files:
        return None
    data = torch.load(files[0], weights_only=True)
    if data["paths"] is None:  # seqMNIST classifies: nothing to draw
        return None
    if data["task"] == "dd-seqmnist":
        fig, grid = plt.subplots(2, 5, figsize=(9, 4.2), squeeze=False)
        axes = list(grid.flatten())
    else:
        fig, single = plt.subplots(figsize=(4.8, 4.8))
        axes = [single]
    draw_examples(axes, data)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = run.figure_path("drawings.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# --- the arrays of a run that ended early --------------------------------------------------------


def results_from_checkpoint(run: RunDirectory, spec: RunSpec | None) -> bool:
    """Save the figure arrays from the area's last checkpoint when the run ended before the
    area saved them (stopped, failed); True when it did. Single-area target reaching and the
    seqMNIST family only."""
    if spec is None or spec.topology != "single" or spec.task == "captions":
        return False
    results = run.path / "results"
    if any(results.glob("*-trajectories.pt")) or any(results.glob("*-examples.pt")):
        return False
    path = run.checkpoint_path(spec.area_names[0])
    if not path.exists():
        return False
    from areas.cortex import AreaCore
    from areas.results import save_results
    from ccdni.base.checkpoint import load_checkpoint
    from ccdni.tasks.base import build_task

    state = dict(load_checkpoint(path, spec.area_names[0], spec).state)
    state.pop("last_metric", None)
    core = AreaCore(spec.replace(device="cpu"), build_task(spec), spec.area_names[0])
    core.load_state_dict(state)
    results.mkdir(exist_ok=True)
    save_results(core, run)
    return True


def draw_run(
    run: RunDirectory,
    model: str,
    title: str,
    spec: RunSpec | None = None,
    status: str | None = None,
) -> list[Path]:
    """Every figure that applies to the run (see the module docstring)."""
    spec = spec if spec is not None else _load_spec(run)
    colour = style.colour(model)
    if status not in (None, "completed"):
        try:
            results_from_checkpoint(run, spec)
        except Exception as exc:  # a damaged checkpoint: the learning curve still gets drawn
            structlog.get_logger().warning("figure_arrays_unavailable", error=str(exc))
    drawn = [
        learning_curve(run, title, colour, spec, status),
        trajectories(run, title, colour, spec),
        drawings(run, title),
    ]
    return [p for p in drawn if p is not None]


# --- multi-seed curves ---------------------------------------------------------------------------


def draw_band(ax: Any, band: Any, colour: str, label: str, ls: str = "-", lw: float = 1.5) -> None:
    """A seed band (:class:`ccdni.reporting.stats.Band`): the mean line and ± s.e.m. shaded;
    the label says how many seeds."""
    if not band.n:
        return
    ax.plot(band.epochs, band.mean, color=colour, ls=ls, lw=lw, label=f"{label} (n={band.n})")
    ax.fill_between(
        band.epochs, band.mean - band.sem, band.mean + band.sem, color=colour, alpha=0.2, lw=0
    )
