"""Throughput and time-to-accuracy of locked vs unlocked chains against the number of areas K.

For each K runs ``benchmarks/decoupling.py`` (every mode side by side, the same data, seed and
transport), keeps each K's numbers as JSON, and draws two panels: samples/s per mode against K
(with the ideal Σ/max × locked throughput from the locked run's measured step times) and the
training wall-clock time to the target validation accuracy per mode against K. Prints a
markdown table (throughput ratios against locked, time-to-target ratios, the ideal ratio).

    python -m experiments.decoupling_vs_k --ks 2,3,4 --out runs/decoupling-vs-k
    python -m experiments.decoupling_vs_k --ks 2,3 --pin-cores -- --epochs 3

Arguments after ``--`` go to every benchmark run (see ``python launch.py bench decoupling -h``).
With C cores and K areas plus a cerebellum and an olive, K > C means areas share cores: the
table says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import decoupling
from ccdni.reporting.plotting import plt
from experiments.common import add_mnist_flags, prepare_mnist
from orchestrator.cli import ScriptParser
from orchestrator.placement import available_cores

ROOT = Path(__file__).resolve().parents[1]


def run_all(args: argparse.Namespace, extra: list[str]) -> dict[int, dict[str, Any]]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    for k in args.ks:
        path = out / f"K{k}.json"
        if args.report_only:
            if path.exists():
                results[k] = json.loads(path.read_text())
            continue
        path.unlink(missing_ok=True)  # never report a previous run's numbers as this one's
        argv = ["--areas", str(k), "--json", str(path), "--runs-dir", str(out / f"K{k}-runs")]
        argv += ["--pin-cores"] if args.pin_cores else []
        code = decoupling.main(argv + extra)
        if code != 0:
            print(f"K={k}: the benchmark did not complete (exit {code})", file=sys.stderr)
        if path.exists():
            results[k] = json.loads(path.read_text())
    return results


def time_to(summary: dict[str, Any], target: float) -> float | None:
    """The chain's training seconds until the validation accuracy first reaches target (None
    also for a run that did not complete: its partial numbers are no measurement)."""
    if summary.get("status") != "completed":
        return None
    for accuracy, seconds in zip(summary.get("val_accuracy", []), summary.get("elapsed", [])):
        if accuracy >= target:
            return seconds
    return None


def ttt_ratio(result: dict[str, Any], mode: str, target: float) -> float | None:
    mine, locked = (time_to(result["modes"].get(m, {}), target) for m in (mode, "locked"))
    return None if mine is None or not locked else mine / locked


def table(results: dict[int, dict[str, Any]], targets: list[float]) -> str:
    cores = len(available_cores())
    modes = [m for m in next(iter(results.values()))["modes"] if m != "locked"]
    head = ["K", "ideal Σ/max", f"ideal on {cores} cores", "locked samples/s"]
    head += [f"{m} thr. ratio" for m in modes]
    head += [f"{m} t→{t:.0%} ratio" for t in targets for m in modes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, result in sorted(results.items()):
        locked = result["modes"].get("locked", {})
        ideal = locked.get("ideal_ratio", float("nan"))
        row = [
            f"{k}" + (" (shared cores)" if k > cores else ""),
            f"{ideal:.2f}",
            f"{min(ideal, cores):.2f}",
            f"{locked.get('samples_per_s', float('nan')):.0f}",
        ]
        for mode in modes:
            value = result["ratios"].get(mode, {}).get("throughput")
            row.append("—" if value is None else f"{value:.2f}")
        for target in targets:
            for mode in modes:
                value = ttt_ratio(result, mode, target)
                row.append("—" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _throughput(summary: dict[str, Any]) -> float:
    ok = summary.get("status") == "completed"
    return summary.get("samples_per_s", float("nan")) if ok else float("nan")


def draw(results: dict[int, dict[str, Any]], path: Path, targets: list[float]) -> None:
    ks = sorted(results)
    modes = list(results[ks[0]]["modes"])
    fig, (ax_thr, ax_ttt) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ["o-", "s--", "^:"]
    for i, mode in enumerate(modes):
        colour = f"C{i}"
        thr = [_throughput(results[k]["modes"].get(mode, {})) for k in ks]
        ax_thr.plot(ks, thr, "o-", color=colour, label=mode)
        for j, target in enumerate(targets):
            ttt = [time_to(results[k]["modes"].get(mode, {}), target) for k in ks]
            ttt = [float("nan") if t is None else t for t in ttt]
            ax_ttt.plot(ks, ttt, styles[j % 3], color=colour, label=f"{mode}, {target:.0%}")
    locked = [results[k]["modes"].get("locked") for k in ks]
    if all(m and m.get("status") == "completed" for m in locked):
        ideal = [m["samples_per_s"] * m["ideal_ratio"] for m in locked]
        ax_thr.plot(ks, ideal, "k--", label="ideal, a core per area (Σ/max × locked)")
        on_cores = [m["samples_per_s"] * min(m["ideal_ratio"], m.get("cores", 1)) for m in locked]
        ax_thr.plot(ks, on_cores, "k:", label="ideal on this machine's cores")
    ax_thr.set(xlabel="areas K", ylabel="samples / s (last area)", title="throughput")
    ax_ttt.set(
        xlabel="areas K",
        ylabel="training seconds",
        title="time to a validation accuracy (missing: not reached)",
    )
    for ax in (ax_thr, ax_ttt):
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="2,3,4", help="comma-separated numbers of areas")
    parser.add_argument("--out", default="runs/decoupling-vs-k", help="JSON and runs go here")
    parser.add_argument(
        "--pin-cores", action="store_true", help="pin area k to the k-th available core"
    )
    parser.add_argument("--figure", default="", help="figure path (default: OUT/figure.png)")
    parser.add_argument("--report-only", action="store_true", help="redraw from the JSON")
    parser.add_argument(
        "--targets", default="0.8,0.9", help="validation accuracies for time-to-accuracy"
    )
    add_mnist_flags(parser)
    args = parser.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",") if k.strip()]
    if not args.report_only:
        prepare_mnist(parser, args)  # a missing data folder: one line, exit 2, nothing run
    results = run_all(args, extra)
    if not results:
        print("no results", file=sys.stderr)
        return 1
    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    figure = Path(args.figure or Path(args.out) / "figure.png")
    draw(results, figure, targets)
    print(table(results, targets))
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
