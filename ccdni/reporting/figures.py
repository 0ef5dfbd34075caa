"""PNG figures of a run directory: learning curve, reach trajectories (paper Fig. 2a,b) and
the seqMNIST drawings (paper Fig. 3a)."""

from __future__ import annotations

from pathlib import Path

import torch

from ccdni.base.rundir import RunDirectory
from ccdni.reporting.plotting import plt

MODEL_COLOURS = {"lstm": "grey", "cc-dni": "tab:orange", "scc-dni": "tab:cyan"}  # as in the paper


def learning_curve(run: RunDirectory, title: str, colour: str = "tab:orange") -> Path | None:
    """Validation metric and training loss per epoch; cerebellar loss below when present."""
    names = sorted(
        {m["region"] for m in run.metrics() if str(m.get("region", "")).startswith("area")},
        key=lambda name: int(name.removeprefix("area") or 0),
    )
    # the area that reads the task's loss: the only one, or a chain's last
    area = (
        [m for m in run.metrics(names[-1]) if "epoch" in m and "train_loss" in m] if names else []
    )
    if not area:
        return None
    olive = [m for m in run.metrics("olive") if "epoch" in m and _cerebellar_losses(m)]
    keys = ("val_mse_x100", "val_mse", "val_error_pct", "val_accuracy")
    key = next((k for k in keys if k in area[0]), None)
    rows = 2 if olive else 1
    fig, axes = plt.subplots(rows, 1, figsize=(6, 3.2 * rows), sharex=True, squeeze=False)
    ax = axes[0, 0]
    epochs = [m["epoch"] + 1 for m in area]
    if key:
        ax.plot(epochs, [m[key] for m in area], color=colour, label=f"validation {key[4:]}")
    ax.plot(
        epochs,
        [m["train_loss"] for m in area],
        color=colour,
        alpha=0.4,
        ls="--",
        label="training loss",
    )
    ax.set_ylabel("task error")
    ax.set_title(title)
    ax.legend(frameon=False)
    if olive:
        ax2 = axes[1, 0]
        interfaces = sorted({name for m in olive for name in _cerebellar_losses(m)})
        for i, name in enumerate(interfaces):
            points = [(m["epoch"] + 1, _cerebellar_losses(m).get(name)) for m in olive]
            points = [(e, v) for e, v in points if v is not None]
            ax2.plot(
                [e for e, _ in points],
                [v for _, v in points],
                color="tab:purple" if len(interfaces) == 1 else f"C{i}",
                label=name or None,
            )
        if len(interfaces) > 1:
            ax2.legend(frameon=False, fontsize=7)
        ax2.set_ylabel("cerebellar loss $L_C$")
        ax2.set_yscale("log")
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    path = run.figure_path("learning_curve.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def trajectories(run: RunDirectory, title: str, colour: str = "tab:orange") -> Path | None:
    """Reach trajectories towards every target (paper Fig. 2a)."""
    files = sorted(run.path.joinpath("results").glob("*-trajectories.pt"))
    if not files:
        return None
    data = torch.load(files[0], weights_only=True)
    outputs, targets, labels = data["outputs"], data["targets"], data["labels"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(
        targets[:, 0], targets[:, 1], s=160, facecolors="none", edgecolors="black", label="targets"
    )
    for i, label in enumerate(labels.tolist()):
        path = torch.cat([torch.zeros(1, 2), outputs[i]], dim=0)
        ax.plot(path[:, 0], path[:, 1], color=colour, alpha=0.8)
        ax.scatter(path[-1, 0], path[-1, 1], color=colour, s=14)
        ax.annotate(str(label), targets[label].tolist(), ha="center", va="center", fontsize=7)
    ax.set_aspect("equal")
    ax.set_xlim(-13, 13)
    ax.set_ylim(-13, 13)
    ax.set_title(title)
    fig.tight_layout()
    out = run.figure_path("trajectories.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# one colour per digit: tab10 with its grey (7) swapped for black, as the targets are grey
DIGIT_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "black",
    "tab:olive",
    "tab:cyan",
)


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
        fig, ax = plt.subplots(2, 5, figsize=(9, 4.2), squeeze=False)
        axes = list(ax.flatten())
    else:
        fig, ax = plt.subplots(figsize=(4.8, 4.8))
        axes = [ax]
    draw_examples(axes, data)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = run.figure_path("drawings.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def draw_run(run: RunDirectory, model: str, title: str) -> list[Path]:
    colour = MODEL_COLOURS.get(model, "tab:blue")
    drawn = [
        learning_curve(run, title, colour),
        trajectories(run, title, colour),
        drawings(run, title),
    ]
    return [p for p in drawn if p is not None]
