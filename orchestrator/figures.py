"""PNG figures of a run directory: learning curve and reach trajectories (paper Fig. 2a,b)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from orchestrator.rundir import RunDirectory  # noqa: E402

MODEL_COLOURS = {"lstm": "grey", "cc-dni": "tab:orange", "scc-dni": "tab:cyan"}  # as in the paper


def learning_curve(run: RunDirectory, title: str, colour: str = "tab:orange") -> Path | None:
    """Validation metric and training loss per epoch; cerebellar loss below when present."""
    area = [m for m in run.metrics() if m.get("region", "").startswith("area") and "epoch" in m]
    if not area:
        return None
    olive = [m for m in run.metrics("olive") if "cerebellar_loss" in m]
    key = next((k for k in ("val_mse_x100", "val_mse", "val_error_pct") if k in area[0]), None)
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
        ax2.plot(
            [m["epoch"] + 1 for m in olive],
            [m["cerebellar_loss"] for m in olive],
            color="tab:purple",
        )
        ax2.set_ylabel("cerebellar loss $L_C$")
        ax2.set_yscale("log")
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    path = run.figure_path("learning_curve.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def draw_run(run: RunDirectory, model: str, title: str) -> list[Path]:
    colour = MODEL_COLOURS.get(model, "tab:blue")
    drawn = [learning_curve(run, title, colour), trajectories(run, title, colour)]
    return [p for p in drawn if p is not None]
