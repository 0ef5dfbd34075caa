"""Paper Fig. 2b,d: target reaching — LSTM vs CC-DNI vs sCC-DNI over seeds and truncations.

    python -m experiments.fig2_target_reaching --seeds 10 --truncations 2 --out docs

Runs ``launch.py sweep`` over model × T × seed (multi-process by default; ``--inprocess``
for the in-process reference), then writes a table (final validation MSE, mean ± s.e.m. over
seeds) and figures: learning curves with seed bands (Fig. 2b), MSE vs T (Fig. 2d) and the
reach trajectories of seed 0 (Fig. 2a).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from ccdni.reporting.figures import MODEL_COLOURS
from ccdni.reporting.plotting import plt
from orchestrator.sweep import Sweep

ROOT = Path(__file__).resolve().parents[1]

MODELS = ("lstm", "cc-dni", "scc-dni")


def sem(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--truncations", default="2", help="comma-separated T values")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--inprocess", action="store_true")
    parser.add_argument("--timing", default="wait", choices=("lockstep", "wait", "stale"))
    parser.add_argument("--cue", default="integer")
    parser.add_argument("--sweep-dir", default="runs/sweeps/fig2")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--last", type=int, default=5)
    args = parser.parse_args()

    truncations = [int(t) for t in args.truncations.split(",")]
    sweep_dir = Path(args.sweep_dir)
    base = {
        "epochs": args.epochs,
        "inprocess": args.inprocess,
        "timing": args.timing,
        "cue": args.cue,
        "figures": False,
    }
    grid = {"model": list(MODELS), "truncation": truncations, "seed": list(range(args.seeds))}
    points = Sweep(sweep_dir, base, grid, args.slots).run()

    curves: dict[tuple[str, int], list[list[float]]] = {}
    for point in points:
        run = sweep_dir / "runs" / point.name
        if point.status not in ("completed", "skipped"):
            print(f"skipping {point.name}: {point.status} {point.error}")
            continue
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        area = sorted(
            (r for r in rows if r["region"] == "area0" and "epoch" in r), key=lambda r: r["epoch"]
        )
        curves.setdefault((point.values["model"], point.values["truncation"]), []).append(
            [r["val_mse"] for r in area]
        )

    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    lines = ["| T | model | final MSE (mean ± s.e.m.) | seeds |", "| --- | --- | --- | --- |"]
    finals: dict[tuple[str, int], list[float]] = {}
    for t in truncations:
        for model in MODELS:
            members = curves.get((model, t), [])
            finals[(model, t)] = [statistics.mean(c[-args.last :]) for c in members]
            values = finals[(model, t)]
            if values:
                lines.append(
                    f"| {t} | {model} | {statistics.mean(values):.2f} ± {sem(values):.2f}"
                    f" | {len(values)} |"
                )
    table = "\n".join(lines)
    suffix = "" if not args.inprocess else "-inprocess"
    (out / f"fig2_table{suffix}.md").write_text(table + "\n")
    print(table)

    fig, axes = plt.subplots(1, 2 if len(truncations) > 1 else 1, figsize=(11, 4), squeeze=False)
    ax = axes[0, 0]
    t0 = truncations[0]
    for model in MODELS:
        members = curves.get((model, t0), [])
        if not members:
            continue
        mean = [statistics.mean(v) for v in zip(*members)]
        band = [sem(list(v)) for v in zip(*members)]
        epochs = range(1, len(mean) + 1)
        ax.plot(epochs, mean, color=MODEL_COLOURS[model], label=model)
        ax.fill_between(
            epochs,
            [m - b for m, b in zip(mean, band)],
            [m + b for m, b in zip(mean, band)],
            color=MODEL_COLOURS[model],
            alpha=0.25,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MSE")
    ax.set_title(f"target reaching, T={t0} (mean ± s.e.m., {args.seeds} seeds)")
    ax.legend(frameon=False)
    if len(truncations) > 1:
        ax = axes[0, 1]
        for model in MODELS:
            ys = [statistics.mean(finals[(model, t)]) for t in truncations if finals[(model, t)]]
            es = [sem(finals[(model, t)]) for t in truncations if finals[(model, t)]]
            ax.errorbar(
                truncations[: len(ys)],
                ys,
                yerr=es,
                color=MODEL_COLOURS[model],
                marker="o",
                capsize=3,
                label=model,
            )
        ax.set_xlabel("truncation T")
        ax.set_ylabel(f"MSE, last {args.last} epochs")
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(out / "figures" / f"fig2_learning{suffix}.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, model in zip(axes, MODELS):
        name = f"model={model}_truncation={t0}_seed=0"
        files = list((sweep_dir / "runs" / name / "results").glob("*-trajectories.pt"))
        if not files:
            continue
        data = torch.load(files[0], weights_only=True)
        targets = data["targets"]
        ax.scatter(targets[:, 0], targets[:, 1], s=140, facecolors="none", edgecolors="black")
        for path in data["outputs"]:
            full = torch.cat([torch.zeros(1, 2), path])
            ax.plot(full[:, 0], full[:, 1], color=MODEL_COLOURS[model], alpha=0.9)
        ax.set_aspect("equal")
        ax.set_xlim(-13, 13)
        ax.set_ylim(-13, 13)
        ax.set_title(f"{model}, T={t0}, seed 0")
    fig.tight_layout()
    fig.savefig(out / "figures" / f"fig2a_trajectories{suffix}.png", dpi=100)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
