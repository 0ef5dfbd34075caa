"""What the experiment scripts share: sweep plans and running them with progress, the
sweep-running flags, running a command, copying the report's figures into docs/.

An experiment describes its measurements as :class:`SweepPlan` s (a folder name, the base
spec and the grid) for a named budget; :func:`run_plans` runs them through
:class:`orchestrator.sweep.Sweep` (one ``launch.py run`` process per point, finished points
skipped), so ``python -m experiments.claims`` reuses exactly the runs an experiment made.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SweepPlan:
    """One sweep of an experiment: ``ROOT/name`` holds its runs."""

    name: str
    base: dict[str, Any]  # spec fields shared by every point
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]]  # axes (see orchestrator.sweep)
    about: str = ""

    def points(self) -> int:
        grids = self.grid if isinstance(self.grid, list) else [self.grid]
        total = 0
        for grid in grids:
            count = 1
            for values in grid.values():
                count *= len(values)
            total += count
        return total


@dataclass
class Placement:
    """Where the runs of a plan go (see ``launch.py sweep --help``)."""

    slots: int = 1
    device: str = "cpu"
    runs_per_gpu: int = 2
    extra: dict[str, Any] = field(default_factory=dict)  # more spec fields for every run
    inline: bool = False  # run the points inside this process (see run_plans)


def add_placement_flags(parser: argparse.ArgumentParser) -> None:
    """``--slots``, ``--device``, ``--runs-per-gpu``, ``--inline``, ``--report-only``."""
    parser.add_argument(
        "--slots", type=int, default=1, help="concurrent runs on the CPU (default: %(default)s)"
    )
    parser.add_argument(
        "--device", default="cpu", help="'cpu', or 'cuda' to place runs on every GPU"
    )
    parser.add_argument(
        "--runs-per-gpu", type=int, default=2, help="concurrent runs per GPU (default: 2)"
    )
    parser.add_argument(
        "--inline",
        action="store_true",
        help="run the points one after the other inside this process (no process start-up "
        "per run; same numbers, same sweep folder)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing; report what is on disk"
    )


def add_budget_flag(parser: argparse.ArgumentParser, budgets: dict[str, Any], default: str) -> None:
    """``--budget NAME``, its help listing every budget's ``about``."""
    parser.add_argument(
        "--budget",
        choices=sorted(budgets),
        default=default,
        help="run size: " + "; ".join(f"{k}: {b.about}" for k, b in sorted(budgets.items())),
    )


def add_page_flags(parser: argparse.ArgumentParser, sweeps_root: str, doc: str) -> None:
    """``--budget full|quick``, ``--sweeps-root``, ``--doc``, ``--figures-dir`` of a figure's
    experiment that writes one results page."""
    parser.add_argument(
        "--budget",
        choices=("full", "quick"),
        default="full",
        help="run size: full (the results page) or quick (CI-sized)",
    )
    parser.add_argument("--sweeps-root", default=sweeps_root, help="where the sweeps go")
    parser.add_argument("--doc", default=doc, help="results page to write")
    parser.add_argument("--figures-dir", default="docs/figures", help="where figures go")


def add_mnist_flags(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--download``, as ``launch.py run`` has them."""
    from orchestrator.cli import add_data_arguments

    add_data_arguments(parser)


def prepare_mnist(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """MNIST checked (or, with ``--download``, fetched) once, before any run starts: a missing
    data folder is one line naming it and what to do, exit 2, and nothing is run or written.

    A ``--data-dir`` is handed to every run as ``$CCDNI_DATA`` (runs in this process and the
    processes it starts), not as a spec field: where the data lies is not part of a run's
    identity, so finished runs are reused whichever way the folder was named."""
    from ccdni.base.spec import load_spec
    from ccdni.tasks.mnist_data import DataMissingError, check_mnist

    try:
        root = check_mnist(
            load_spec(data_dir=args.data_dir).resolved_data_dir, download=args.download
        )
    except DataMissingError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if args.data_dir:
        os.environ["CCDNI_DATA"] = str(root)
    return root


def placement_of(args: argparse.Namespace) -> Placement:
    return Placement(args.slots, args.device, args.runs_per_gpu, inline=args.inline)


def run_plans(
    plans: Sequence[SweepPlan],
    root: str | Path,
    where: Placement | None = None,
    echo: bool = True,
    inline: bool = False,
) -> dict[str, list[Any]]:
    """Run every plan's sweep under ``root`` (skipping finished points); returns, per plan
    name, its :class:`orchestrator.sweep.Point` s. Progress goes to stdout when ``echo``.

    ``inline``: run the points one after the other inside this process instead of one
    ``launch.py run`` process each (for CI-sized budgets of in-process runs, where a
    process's start-up would cost more than its run); the sweep folder is the same.
    """
    from orchestrator.sweep import Sweep

    where = where or Placement()
    out: dict[str, list[Any]] = {}
    overall = _Overall(sum(plan.points() for plan in plans)) if len(plans) > 1 else None
    for plan in plans:
        base = {**plan.base, **where.extra}
        sweep = Sweep(
            Path(root) / plan.name,
            base,
            plan.grid,
            where.slots,
            device=where.device,
            runs_per_gpu=where.runs_per_gpu,
        )
        progress = _Progress(plan.name, overall) if echo else None
        if inline or where.inline:
            out[plan.name] = _run_inline(sweep, progress)
        else:
            out[plan.name] = sweep.run(progress=progress)
    return out


def _run_inline(sweep: Any, progress: Any) -> list[Any]:
    """Sweep.run's bookkeeping (skip finished points, results.csv), runs in this process."""
    import torch

    from orchestrator.runner import execute_run
    from orchestrator.sweep import row, write_results

    torch.set_num_threads(1)
    sweep.record_grid()
    queue = sweep.pending()
    write_results(sweep.results_path, sweep.points, sweep.rows)
    for point in queue:
        started = time.monotonic()
        if point.run_dir.exists():  # an earlier attempt that did not complete: kept aside
            target = sweep.previous_dir("attempts")
            shutil.move(str(point.run_dir), str(target / point.name))
        try:
            outcome = execute_run(point.spec, console=False)
            point.summary = outcome.summary
            ok = outcome.summary.get("status") == "completed"
            point.status = "completed" if ok else "failed"
        except Exception as exc:  # one point fails alone, as in a sweep
            point.status, point.error = "failed", f"{type(exc).__name__}: {exc}"
        point.wall = time.monotonic() - started
        sweep.rows[point.name] = row(point)
        write_results(sweep.results_path, sweep.points, sweep.rows)
        if progress is not None:
            progress(sweep.points)
    if progress is not None:
        progress(sweep.points)
    return sweep.points


class _Overall:
    """Points finished over every plan of one ``run_plans`` call (the experiment's progress)."""

    def __init__(self, total: int):
        self.total = total
        self.finished: set[tuple[str, str]] = set()
        self.ran = 0  # points run here (not found finished on disk)
        self.started = time.monotonic()

    def text(self) -> str:
        left = self.total - len(self.finished)
        elapsed = time.monotonic() - self.started
        eta = f", ETA {elapsed / self.ran * left / 60:.1f} min" if self.ran and left else ""
        return f"experiment {len(self.finished)}/{self.total} points{eta}"


class _Progress:
    """One line per finished point: finished / total (completed, failed), the ETA of this
    sweep and of the experiment, from the runs done here."""

    def __init__(self, name: str, overall: _Overall | None = None):
        self.name = name
        self.started = time.monotonic()
        self.reported: set[str] = set()
        self.ran = 0
        self.overall = overall

    def __call__(self, points: list[Any]) -> None:
        done = [p for p in points if p.status in ("completed", "skipped", "failed", "invalid")]
        new = [p for p in done if p.name not in self.reported]
        if not new:
            return
        for point in new:
            self.reported.add(point.name)
            ran_here = point.status in ("completed", "failed")
            if ran_here:
                self.ran += 1
            if self.overall is not None:
                self.overall.finished.add((self.name, point.name))
                self.overall.ran += ran_here
            if point.status in ("failed", "invalid"):
                print(f"  {self.name}: {point.name} {point.status}: {point.error}", flush=True)
        failed = sum(p.status in ("failed", "invalid") for p in done)
        left = len(points) - len(done)
        elapsed = time.monotonic() - self.started
        eta = f", ETA {elapsed / self.ran * left / 60:.1f} min" if self.ran and left else ""
        overall = f" · {self.overall.text()}" if self.overall is not None else ""
        print(
            f"  {self.name}: {len(done)}/{len(points)} points finished "
            f"({len(done) - failed} completed, {failed} failed; "
            f"{self.ran} run here in {elapsed / 60:.1f} min{eta}){overall}",
            flush=True,
        )


def plan_command(plan: SweepPlan, root: str | Path, slots: int = 1) -> str:
    """An equivalent ``launch.py sweep`` command line (for a single grid), for the docs."""
    grids = plan.grid if isinstance(plan.grid, list) else [plan.grid]
    words = ["python", "launch.py", "sweep", "--sweep-dir", str(Path(root) / plan.name)]
    for key, value in plan.base.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False:
            words.append("--no-" + key.replace("_", "-"))
        else:
            words += [flag, str(value)]
    if len(grids) == 1:
        for axis, values in grids[0].items():
            if axis == "seed":
                words += ["--seeds", _range_text(values)]
            else:
                words += ["--vary", f"{axis}={','.join(_value_text(v) for v in values)}"]
    words += ["--slots", str(slots)]
    return shlex.join(words)


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ":".join(str(v) for v in value)
    return str(value)


def _range_text(values: Sequence[int]) -> str:
    values = list(values)
    if values and values == list(range(values[0], values[-1] + 1)) and len(values) > 1:
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)


# --- the older command-line helpers (experiments that build launch.py commands) -----------------


def add_sweep_flags(parser: argparse.ArgumentParser, prefix: str) -> None:
    """Placement, mode and report flags common to every sweep-driven experiment."""
    parser.add_argument("--slots", type=int, default=2, help="concurrent runs on the CPU")
    parser.add_argument("--device", default="cpu", help="'cuda' places runs on every GPU")
    parser.add_argument(
        "--runs-per-gpu", type=int, default=2, help="concurrent runs per GPU with --device cuda"
    )
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


def python() -> str:
    return sys.executable


def copy_figures(sweep_dir: Path, target: str | Path, names: Iterable[str], prefix: str) -> None:
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = sweep_dir / "figures" / name
        if path.exists():
            shutil.copy(path, target / f"{prefix}{name}")
            print(f"copied {target / (prefix + name)}")


def publish_report(
    markdown: Path, doc: Path, command: str, figures_dir: Path, prefix: str, heading: str
) -> list[Path]:
    """Put a sweep's ``report.md`` into the generated block of ``doc`` written by
    ``command``: its title becomes ``heading``, its figures are copied into ``figures_dir``
    as ``PREFIX + name`` and the links follow. Returns the files written."""
    import os
    import re

    from ccdni.reporting.tables import replace_generated

    text = Path(markdown).read_text()
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = "\n".join(lines).strip()
    body = body.replace("\n## ", "\n#### ")
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def relink(match: re.Match) -> str:
        name = match.group(2)
        source = Path(markdown).parent / "figures" / name
        target = figures_dir / f"{prefix}{name}"
        if source.exists():
            shutil.copy(source, target)
            written.append(target)
        rel = Path(os.path.relpath(target, doc.parent)).as_posix()
        return f"![{match.group(1)}]({rel})"

    body = re.sub(r"!\[([^\]]*)\]\(figures/([^)]+)\)", relink, body)
    replace_generated(doc, command, f"### {heading}\n\n{body}")
    return [*written, doc]


def sweep_page_parser(
    description: str, sweeps_root: str = "runs/sweeps"
) -> argparse.ArgumentParser:
    """The flags of an experiment whose sweeps fill a generated block of docs/results-sweeps.md:
    budget, sweeps root, figure copies, the page and its figure folder, and placement."""
    from orchestrator.cli import ScriptParser

    parser = ScriptParser(description=description)
    parser.add_argument(
        "--budget",
        choices=("full", "seqmnist", "quick"),
        default="full",
        help="run size: full (the results page), seqmnist (the seqMNIST variant), quick (CI-sized)",
    )
    parser.add_argument("--sweeps-root", default=sweeps_root, help="where the sweeps go")
    parser.add_argument(
        "--copy-figures", metavar="DIR", help="also copy the main figures to DIR, prefixed"
    )
    parser.add_argument(
        "--doc",
        default="docs/results-sweeps.md",
        help="the page whose generated block gets the report ('' for none)",
    )
    parser.add_argument("--figures-dir", default="docs/figures", help="where --doc's figures go")
    add_placement_flags(parser)
    return parser


def run_page_plans(args: argparse.Namespace, chosen: list[SweepPlan]) -> Path:
    """Run the chosen sweeps (unless --report-only) and return the first one's folder."""
    root = ROOT / args.sweeps_root
    if not args.report_only:
        run_plans(chosen, root, placement_of(args))
    return root / chosen[0].name
