"""Paper Fig. 7 / appendix B: forward CC-DNI on MNIST (the cerebellum as a forward predictor of h₂).

Main (cortical) network: 784→256→256→10, batch-norm + ReLU after each hidden layer, trained on
cross-entropy through its own h₂ (the paper analyses the cerebellum as a predictor of h₂, so
the readout is *not* fed ĥ during training). Cerebellum: x → 256 ReLU ("granule/Purkinje",
hidden) → 256 linear ("nuclei", output ĥ = C(x)), trained by the olive on
||ĥ − h₂||² (sum over units, mean over the batch; h₂ detached: the olive's error does not reach
the cortex). Both networks: Adam, lr 1e-3, default betas. Forward unlocking is measured, not
trained: every step also reports the cross-entropy the readout would get from ĥ instead of h₂.

Every ``--record-every`` steps a fixed probe batch (validation images, networks in eval mode)
gives the |Pearson r| matrices between cerebellar hidden units and h₂ units and between
cerebellar output units and h₂ units; the 256 most correlated pairs at the first and at the last
record are followed over training (paper Fig. 7 bottom). Curves are smoothed with a
Savitzky–Golay filter (window 19, order 3) as in the paper.

    python -m experiments.fig7_forward_dni --epochs 2 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# one core: numpy's BLAS (used for the |r| matrices) would otherwise start a thread per core
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402 - after the BLAS thread limits
import torch  # noqa: E402 - after the BLAS thread limits
import torch.nn.functional as F  # noqa: E402 - after the BLAS thread limits
from scipy.signal import savgol_filter  # noqa: E402 - after the BLAS thread limits
from torch import nn  # noqa: E402 - after the BLAS thread limits

from ccdni.analysis.forward_model import abs_pearson, pair_values, top_pairs  # noqa: E402 - after the BLAS thread limits
from ccdni.base.spec import load_spec  # noqa: E402 - after the BLAS thread limits
from ccdni.reporting.plotting import plt  # noqa: E402 - after the BLAS thread limits
from ccdni.tasks.mnist_data import load_mnist  # noqa: E402 - after the BLAS thread limits
from experiments.common import add_mnist_flags, prepare_mnist  # noqa: E402 - after the BLAS thread limits
from orchestrator.cli import ScriptParser  # noqa: E402 - after the BLAS thread limits

ROOT = Path(__file__).resolve().parents[1]

HIDDEN = 256  # both hidden layers of the main network and the cerebellar hidden layer
TOP_K = 256  # most correlated pairs followed (paper Fig. 7)
SG_WINDOW, SG_ORDER = 19, 3  # Savitzky–Golay smoothing as in the paper


class Cortex(nn.Module):
    """784→256→256→10 with batch-norm + ReLU after each hidden layer; returns (h₂, logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(784, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU())
        self.readout = nn.Linear(HIDDEN, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h2 = self.layer2(self.layer1(x))  # (B, 256)
        return h2, self.readout(h2)  # (B, 256), (B, 10)


class Cerebellum(nn.Module):
    """x → 256 ReLU (granule/Purkinje) → 256 linear (nuclei) = ĥ; returns (hidden, ĥ)."""

    def __init__(self) -> None:
        super().__init__()
        self.granule = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU())
        self.nuclei = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.granule(x)  # (B, 256)
        return hidden, self.nuclei(hidden)  # (B, 256), (B, 256)


def smooth(values: np.ndarray) -> np.ndarray:
    if len(values) < SG_WINDOW:
        return values
    return savgol_filter(values, SG_WINDOW, SG_ORDER)


@torch.no_grad()
def probe(cortex: Cortex, cerebellum: Cerebellum, x: torch.Tensor) -> tuple[np.ndarray, ...]:
    """|r| (256, 256) cerebellar hidden vs h₂ and cerebellar output vs h₂ on the probe batch."""
    cortex.eval()
    cerebellum.eval()
    h2, _ = cortex(x)
    hidden, h_hat = cerebellum(x)
    cortex.train()
    cerebellum.train()
    return (
        abs_pearson(hidden, h2).astype(np.float32),
        abs_pearson(h_hat, h2).astype(np.float32),
    )


@torch.no_grad()
def accuracy(cortex: Cortex, cerebellum: Cerebellum, x: torch.Tensor, y: torch.Tensor):
    """Validation accuracy with the readout fed h₂ (locked) and fed ĥ (forward-unlocked)."""
    cortex.eval()
    cerebellum.eval()
    h2, logits = cortex(x)
    _, h_hat = cerebellum(x)
    unlocked = cortex.readout(h_hat)
    cortex.train()
    cerebellum.train()
    return (
        (logits.argmax(1) == y).float().mean().item(),
        (unlocked.argmax(1) == y).float().mean().item(),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ScriptParser(description=__doc__.splitlines()[0])
    add_mnist_flags(parser)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the training images")
    parser.add_argument("--batch", type=int, default=100, help="batch size")
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="Adam learning rate (cortex and cerebellum)"
    )
    parser.add_argument("--train-subset", type=int, default=0, help="first N train images (0: all)")
    parser.add_argument("--probe", type=int, default=1000, help="validation images in the probe")
    parser.add_argument("--record-every", type=int, default=5, help="steps between probes")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and batch order")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--figure",
        default=str(ROOT / "docs" / "figures" / "fig7_forward_dni.png"),
        help="where the figure goes",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@dataclass
class ForwardRun:
    """What one training run of the forward CC-DNI produced (see :func:`train`)."""

    ce_locked: list[float]
    ce_unlocked: list[float]
    olive_loss: list[float]
    abs_out: list[float]
    abs_h2: list[float]
    steps: np.ndarray  # the recorded steps
    evolution: dict  # (layer, "start"/"end") → (records, 256) |r| of the followed pairs, …
    epoch_rows: list[tuple]
    step: int
    seconds: float

    def pair_summary(self) -> dict[str, float]:
        """Mean |r| of the followed top-256 pairs at the first and the last record:
        ``{layer}_{chosen}_{first|last}`` for layer hidden/output, pairs chosen at start/end."""
        out = {}
        for layer in ("hidden", "output"):
            for when in ("start", "end"):
                values = self.evolution[layer, when].mean(axis=1)
                out[f"{layer}_{when}_first"] = float(values[0])
                out[f"{layer}_{when}_last"] = float(values[-1])
        return out


def train(args: argparse.Namespace) -> ForwardRun:
    """Train the cortex and the forward cerebellum as the module docstring says."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_mnist(load_spec(data_dir=args.data_dir).resolved_data_dir)
    data = data.subset(train_subset=args.train_subset)
    x_train = data.train_images.reshape(-1, 784)  # (N, 784)
    y_train = data.train_labels
    x_val = data.val_images.reshape(-1, 784)  # (12000, 784)
    y_val = data.val_labels
    x_probe = x_val[: args.probe]  # fixed probe batch

    cortex, cerebellum = Cortex(), Cerebellum()
    opt_cortex = torch.optim.Adam(cortex.parameters(), lr=args.lr)
    opt_cerebellum = torch.optim.Adam(cerebellum.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)

    ce_locked, ce_unlocked, olive_loss, abs_out, abs_h2 = [], [], [], [], []
    record_steps, r_hidden, r_output = [], [], []
    epoch_rows = []
    step, started = 0, time.time()
    n = x_train.shape[0]
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(n, generator=generator)
        for first in range(0, n - args.batch + 1, args.batch):
            if step % args.record_every == 0:
                rh, ro = probe(cortex, cerebellum, x_probe)
                record_steps.append(step)
                r_hidden.append(rh)
                r_output.append(ro)
            index = order[first : first + args.batch]
            x, y = x_train[index], y_train[index]
            h2, logits = cortex(x)
            loss = F.cross_entropy(logits, y)
            opt_cortex.zero_grad()
            loss.backward()
            opt_cortex.step()
            # the olive: climbing-fibre error ĥ − h₂ (target detached from the cortex)
            _, h_hat = cerebellum(x)
            target = h2.detach()
            loss_c = ((h_hat - target) ** 2).sum(dim=1).mean()
            opt_cerebellum.zero_grad()
            loss_c.backward()
            opt_cerebellum.step()
            with torch.no_grad():
                ce_unlocked.append(F.cross_entropy(cortex.readout(h_hat), y).item())
            ce_locked.append(loss.item())
            olive_loss.append(loss_c.item())
            abs_out.append(h_hat.detach().abs().mean().item())
            abs_h2.append(target.abs().mean().item())
            step += 1
        acc_locked, acc_unlocked = accuracy(cortex, cerebellum, x_val, y_val)
        epoch_rows.append(
            (
                epoch,
                step,
                float(np.mean(ce_locked[-100:])),
                float(np.mean(ce_unlocked[-100:])),
                float(np.mean(olive_loss[-100:])),
                float(np.mean(abs_out[-100:])),
                acc_locked,
                acc_unlocked,
            )
        )
        print(f"epoch {epoch} step {step} {time.time() - started:.0f}s", file=sys.stderr)
    rh, ro = probe(cortex, cerebellum, x_probe)
    record_steps.append(step)
    r_hidden.append(rh)
    r_output.append(ro)

    steps = np.asarray(record_steps)
    evolution = {}
    for name, mats in (("hidden", np.stack(r_hidden)), ("output", np.stack(r_output))):
        for when, mat in (("start", mats[0]), ("end", mats[-1])):
            pairs = top_pairs(mat, TOP_K)  # (256, 2)
            evolution[name, when] = np.stack([pair_values(m, pairs) for m in mats])  # (R, 256)
        evolution[name, "matched"] = float(np.mean(pairs[:, 0] == pairs[:, 1]))  # end pairs
        evolution[name, "all"] = mats.reshape(len(mats), -1).mean(axis=1)
        evolution[name, "all_std"] = mats.reshape(len(mats), -1).std(axis=1)

    return ForwardRun(
        ce_locked,
        ce_unlocked,
        olive_loss,
        abs_out,
        abs_h2,
        steps,
        evolution,
        epoch_rows,
        step,
        time.time() - started,
    )


def main(argv: list[str] | None = None) -> int:
    script = build_parser()
    args = script.parse_args(argv)
    prepare_mnist(script, args)  # a missing data folder: one line, exit 2
    result = train(args)
    ce_locked, ce_unlocked, abs_out, abs_h2 = (
        result.ce_locked,
        result.ce_unlocked,
        result.abs_out,
        result.abs_h2,
    )
    steps, evolution, epoch_rows, step = (
        result.steps,
        result.evolution,
        result.epoch_rows,
        result.step,
    )
    started = time.time() - result.seconds
    # ---- figure
    fig, axes = plt.subplots(3, 1, figsize=(6.5, 8.5), sharex=True)
    x_steps = np.arange(len(ce_locked))
    ax = axes[0]
    ax.plot(x_steps, ce_locked, color="C0", alpha=0.25, lw=0.6)
    ax.plot(x_steps, smooth(np.asarray(ce_locked)), color="C0", label=r"CE, readout on $h_2$")
    ax.plot(
        x_steps,
        smooth(np.asarray(ce_unlocked)),
        color="C1",
        label=r"CE, readout on $\hat{h}$ (not trained)",
    )
    ax.set_ylabel("training loss")
    ax.set_ylim(0, 2.5)
    ax2 = ax.twinx()
    ax2.plot(x_steps, abs_out, color="C3", alpha=0.25, lw=0.6)
    ax2.plot(x_steps, smooth(np.asarray(abs_out)), color="C3", label=r"mean $|\hat{h}|$ (nuclei)")
    ax2.plot(x_steps, smooth(np.asarray(abs_h2)), color="C3", ls=":", label=r"mean $|h_2|$")
    ax2.set_ylabel("mean |activity|", color="C3")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center right")
    ax.set_title(r"Forward CC-DNI on MNIST (cerebellum predicts $h_2$)", fontsize=10)
    for ax, name, label in (
        (axes[1], "output", r"cereb. nuclei ($\hat{h}$) vs FF $h_2$"),
        (axes[2], "hidden", r"cereb. granule/Purkinje (hidden) vs FF $h_2$"),
    ):
        for when, colour in (("start", "C0"), ("end", "C2")):
            mean = evolution[name, when].mean(axis=1)
            ax.plot(steps, mean, color=colour, alpha=0.25, lw=0.6)
            ax.plot(steps, smooth(mean), color=colour, label=f"top-{TOP_K} pairs at {when}")
        ax.plot(steps, smooth(evolution[name, "all"]), color="grey", ls="--", label="all pairs")
        ax.set_ylabel("|Pearson r|")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="center right")
    axes[-1].set_xlabel("training step (batch)")
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=90)
    print(f"figure: {args.figure} ({Path(args.figure).stat().st_size // 1024} KB)", file=sys.stderr)

    # ---- markdown tables
    print(f"\nsteps: {step}, wall: {time.time() - started:.0f} s, probe: {args.probe} val images\n")
    print(
        "| epoch | step | CE on h₂ (last 100) | CE on ĥ (last 100) | olive loss | mean abs ĥ | val acc (h₂) | val acc (ĥ) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in epoch_rows:
        print("| {} | {} | {:.3f} | {:.3f} | {:.2f} | {:.3f} | {:.4f} | {:.4f} |".format(*row))
    print(
        f"\nmean abs ĥ over the first 20 steps: {np.mean(abs_out[:20]):.3f}; "
        f"mean abs h₂ over the last 100: {np.mean(abs_h2[-100:]):.3f}\n"
    )
    probes = sorted({0, 1, 4, len(steps) // 4, len(steps) // 2, len(steps) - 1})
    print("| layer | pairs | " + " | ".join(f"step {steps[i]}" for i in probes) + " |")
    print("|---|---|" + "---|" * len(probes))
    for name in ("hidden", "output"):
        for when in ("start", "end"):
            values = evolution[name, when].mean(axis=1)
            cells = " | ".join(f"{values[i]:.3f}" for i in probes)
            print(f"| {name} | top-{TOP_K} at {when} | {cells} |")
        cells = " | ".join(f"{evolution[name, 'all'][i]:.3f}" for i in probes)
        print(f"| {name} | all 65 536 (mean) | {cells} |")
        cells = " | ".join(f"{evolution[name, 'all_std'][i]:.3f}" for i in probes)
        print(f"| {name} | all 65 536 (std) | {cells} |")
    print(
        f"\nend-chosen top-{TOP_K} output pairs that are matched (nucleus i ↔ h₂ unit i): "
        f"{evolution['output', 'matched']:.0%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
