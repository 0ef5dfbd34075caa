"""What the experiment scripts share: the sweep-running flags, running a command, copying
the report's figures into docs/."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def add_sweep_flags(parser: argparse.ArgumentParser, prefix: str) -> None:
    """Placement, mode and report flags common to every sweep-driven experiment."""
    parser.add_argument("--slots", type=int, default=2, help="concurrent runs on the CPU")
    parser.add_argument("--device", default="cpu", help="'cuda' places runs on every GPU")
    parser.add_argument("--runs-per-gpu", type=int, default=2)
    parser.add_argument("--processes", action="store_true", help="one process per region")
    parser.add_argument("--extra", default="", help="more spec flags for every run, quoted")
    parser.add_argument("--report-only", action="store_true", help="only redraw the report")
    parser.add_argument(
        "--copy-figures", metavar="DIR", help="also copy the main figures to DIR, prefixed"
    )
    parser.add_argument("--prefix", default=prefix, help="for --copy-figures")


def placement(args: argparse.Namespace) -> list[str]:
    """The sweep flags that place runs (and extra spec flags)."""
    command = ["--no-inprocess" if args.processes else "--inprocess", "--slots", str(args.slots)]
    if args.device != "cpu":
        command += ["--device", args.device, "--runs-per-gpu", str(args.runs_per_gpu)]
    return command + shlex.split(args.extra)


def run(command: list[str]) -> int:
    print("$ " + shlex.join(command), flush=True)
    return subprocess.call(command, cwd=ROOT)


def copy_figures(sweep_dir: Path, target: str | Path, names: Iterable[str], prefix: str) -> None:
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = sweep_dir / "figures" / name
        if path.exists():
            shutil.copy(path, target / f"{prefix}{name}")
            print(f"copied {target / (prefix + name)}")
