"""Paper Fig. 6a: cerebellar ablation during target reaching, done by killing the process.

Runs (through ``launch.py sweep``) CC-DNI and sCC-DNI with the cerebellum ablated at epochs
{10, 50, 100, 150, 200, 250} or never, plus the plain LSTM, over several seeds; draws the
learning curves with the ablation lines and the final error normalised by the intact model;
writes a markdown table.

    python -m experiments.fig6_ablation --seeds 5 --out docs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from ccdni.reporting.figures import MODEL_COLOURS
from ccdni.reporting.plotting import plt
from orchestrator.sweep import Sweep

ROOT = Path(__file__).resolve().parents[1]

ABLATION_EPOCHS = (10, 50, 100, 150, 200, 250)  # as in the paper


def curves(sweep_dir: Path) -> dict[str, dict[str, list[float]]]:
    """name → {"val_mse": per-epoch list} for every completed run of a sweep."""
    out = {}
    for run in sorted((sweep_dir / "runs").iterdir()):
        summary = run / "summary.json"
        if not summary.exists() or json.loads(summary.read_text())["status"] != "completed":
            continue
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        area = sorted(
            (r for r in rows if r["region"] == "area0" and "epoch" in r), key=lambda r: r["epoch"]
        )
        out[run.name] = {
            "val_mse": [r["val_mse"] for r in area],
            "predictions": [r.get("predictions", 0) for r in area],
        }
    return out


def parse(name: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in name.split("_") if "=" in part)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--timing", default="lockstep", choices=("lockstep", "wait", "stale"))
    parser.add_argument(
        "--inprocess",
        action="store_true",
        help="in-process reference (lesion = dropping the core) instead of kills",
    )
    parser.add_argument("--sweep-dir", default="runs/sweeps/fig6a")
    parser.add_argument("--out", default="docs", help="where the table and figures go")
    parser.add_argument("--last", type=int, default=5, help="final error = mean of last epochs")
    args = parser.parse_args()

    sweep_dir = Path(args.sweep_dir)
    base = {
        "epochs": args.epochs,
        "timing": args.timing,
        "inprocess": args.inprocess,
        "figures": False,
    }
    seeds = list(range(args.seeds))
    ablations = ["", *(f"cerebellum@epoch={e}" for e in ABLATION_EPOCHS if e < args.epochs)]
    Sweep(
        sweep_dir / "dni",
        base,
        {"model": ["cc-dni", "scc-dni"], "ablate": ablations, "seed": seeds},
        args.slots,
    ).run()
    Sweep(sweep_dir / "lstm", base, {"model": ["lstm"], "seed": seeds}, args.slots).run()

    runs = {**curves(sweep_dir / "dni"), **curves(sweep_dir / "lstm")}
    final = {name: statistics.mean(c["val_mse"][-args.last :]) for name, c in runs.items()}

    def group(model: str, ablate: str) -> list[str]:
        return [
            n
            for n in runs
            if parse(n).get("model") == model and parse(n).get("ablate", "") == ablate
        ]

    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [1, 1, 0.9]})
    for ax, model in zip(axes[:2], ("cc-dni", "scc-dni")):
        lstm = [runs[n]["val_mse"] for n in group("lstm", "")]
        if lstm:
            ax.plot([statistics.mean(v) for v in zip(*lstm)], color="grey", label="LSTM")
        cmap = plt.get_cmap("viridis")
        for i, ablate in enumerate(ablations):
            members = [runs[n]["val_mse"] for n in group(model, ablate)]
            if not members:
                continue
            mean = [statistics.mean(v) for v in zip(*members)]
            colour = MODEL_COLOURS[model] if not ablate else cmap(i / len(ablations))
            label = "intact" if not ablate else f"ablated @ {ablate.split('=')[1]}"
            ax.plot(mean, color=colour, label=label, lw=2 if not ablate else 1)
            if ablate:
                ax.axvline(int(ablate.split("=")[1]), color=colour, ls=":", lw=0.8)
        ax.set_title(f"{model}: cerebellum killed at epoch E")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation MSE")
        ax.legend(frameon=False, fontsize=7)
    rows = []
    ax = axes[2]
    for model in ("cc-dni", "scc-dni"):
        intact = {parse(n)["seed"]: final[n] for n in group(model, "")}
        xs, ys, errs = [], [], []
        for ablate in ablations[1:]:
            ratios = [
                final[n] / intact[parse(n)["seed"]]
                for n in group(model, ablate)
                if parse(n)["seed"] in intact
            ]
            if not ratios:
                continue
            epoch = int(ablate.split("=")[1])
            sem = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0.0
            xs.append(epoch)
            ys.append(statistics.mean(ratios))
            errs.append(sem)
            absolute = [final[n] for n in group(model, ablate)]
            rows.append((model, epoch, statistics.mean(absolute), ys[-1], sem, len(ratios)))
        ax.errorbar(
            xs, ys, yerr=errs, color=MODEL_COLOURS[model], marker="o", capsize=3, label=model
        )
        values = list(intact.values())
        rows.append((model, "never", statistics.mean(values), 1.0, 0.0, len(values)))
    lstm_final = [final[n] for n in group("lstm", "")]
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set_xlabel("ablation epoch E")
    ax.set_ylabel("final MSE / intact final MSE")
    ax.set_title("error after ablation, normalised")
    ax.legend(frameon=False)
    fig.tight_layout()
    figure = out / "figures" / "fig6a_ablation.png"
    fig.savefig(figure, dpi=100)
    plt.close(fig)

    lines = [
        f"| model | ablated at epoch | final MSE (mean of last {args.last} epochs, mean over "
        "seeds) | ÷ intact (mean ± s.e.m.) | seeds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for model, epoch, absolute, ratio, sem, n in rows:
        lines.append(f"| {model} | {epoch} | {absolute:.2f} | {ratio:.3f} ± {sem:.3f} | {n} |")
    if lstm_final:
        sem = statistics.stdev(lstm_final) / len(lstm_final) ** 0.5 if len(lstm_final) > 1 else 0
        lines.append(
            f"| lstm | — | {statistics.mean(lstm_final):.2f} ± {sem:.2f} | — | {len(lstm_final)} |"
        )
    table = "\n".join(lines)
    (out / "fig6a_table.md").write_text(table + "\n")
    print(table)
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
