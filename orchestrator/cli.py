"""The command line: ``python launch.py [run] [--field value ...] [--spec FILE]``.

With no arguments it runs the default experiment (target reaching, CC-DNI, T=2, three
processes). Every spec field is a flag; a bad flag or value prints one error line and exits
with status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from ccdni.base.spec import FIELDS, LESIONABLE, RunSpec, SpecError, load_spec

GROUPS = (
    (
        "task",
        (
            "task",
            "n_targets",
            "cue",
            "input_noise_var",
            "n_validation",
            "gamma",
            "data_dir",
            "train_subset",
            "val_subset",
            "download",
            "captions_dir",
            "captions_per_image",
        ),
    ),
    (
        "cortical area",
        (
            "model",
            "hidden",
            "bias_factor",
            "truncation",
            "update",
            "step_without_feedback",
            "lr",
            "batch_size",
            "epochs",
            "seed",
        ),
    ),
    (
        "cerebellum and olive",
        (
            "cerebellum_hidden",
            "cerebellum_layers",
            "sparsity_k",
            "synthetic_scale",
            "cerebellum_lr",
            "adam_beta1",
            "adam_beta2",
            "adam_eps",
            "grad_clip",
        ),
    ),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr and exit status 2, and no flag may be
    abbreviated (``--epoch 5`` is refused, never taken for ``--epochs``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


class ScriptParser(OneLineParser):
    """The parser of a benchmark or experiment script, with ``launch.py``'s conventions: no
    abbreviations, one-line errors, and ``--help`` describing every option with its default
    (an option added without a help text gets one naming its default)."""

    def format_help(self) -> str:
        for action in self._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            if "default" not in text:
                if action.nargs == 0:  # a switch
                    shown = "on" if action.default else "off"
                else:
                    shown = "none" if action.default in (None, "") else "%(default)s"
                text = f"{text} (default: {shown})".strip()
            action.help = text
        return super().format_help()


def add_data_arguments(parser: argparse.ArgumentParser, data_dir: bool = True) -> None:
    """``--data-dir`` and ``--download``, as ``launch.py run`` has them (``data_dir=False``: a
    script that already has its own ``--data-dir``)."""
    if data_dir:
        parser.add_argument(
            "--data-dir",
            default="",
            help="folder holding MNIST/raw (default: $CCDNI_DATA, else ./data)",
        )
    parser.add_argument(
        "--download",
        action="store_true",
        help="fetch MNIST into the data folder when it is missing (default: off; nothing is "
        "downloaded unless asked)",
    )


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per spec field, with the field's doc and default as help."""
    parser.add_argument("--spec", metavar="FILE", help="TOML spec file (flags override it).")
    grouped = {name for _, names in GROUPS for name in names}
    groups: list[tuple[str, tuple[str, ...]]] = [(title, names) for title, names in GROUPS]
    groups.append(("processes and outputs", tuple(n for n in FIELDS if n not in grouped)))
    for title, names in groups:
        group = parser.add_argument_group(title)
        for name in names:
            f = FIELDS[name]
            flag = "--" + name.replace("_", "-")
            kind = type(f.default)
            help_text = f"{f.metadata['doc']} (default: {f.default!r})".replace("%", "%%")
            if kind is bool:
                group.add_argument(
                    flag,
                    dest=name,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=help_text,
                )
            else:
                group.add_argument(
                    flag,
                    dest=name,
                    type=kind,
                    default=None,
                    choices=f.metadata.get("choices"),
                    help=help_text,
                    metavar=None if f.metadata.get("choices") else kind.__name__.upper(),
                )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="launch.py",
        description="ccdni: cortico-cerebellar learning as decoupled neural interfaces, every "
        "brain region its own process. With no command, 'run' is assumed.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run one experiment (the default command)",
        description="Run one experiment. Every spec field is a flag; precedence: defaults → "
        "task preset → --spec FILE → flags.",
    )
    add_spec_arguments(run)
    for name, text in (
        ("ablate", "kill a region of a running run (a live lesion)"),
        ("revive", "start a lesioned region of a running run again"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
        cmd.add_argument("--region", required=True, choices=LESIONABLE, help="which region")
        if name == "revive":
            cmd.add_argument(
                "--from-checkpoint",
                action="store_true",
                help="restore the region's last checkpoint instead of starting fresh",
            )
    status = sub.add_parser("status", help="running runs, or one run's regions")
    status.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory")
    status.add_argument("--runs-dir", default="runs", help="where to look for running runs")
    stop = sub.add_parser("stop", help="stop a running run (staged shutdown)")
    stop.add_argument("run_dir", metavar="RUN_DIR")
    resume = sub.add_parser("resume", help="continue a run from its last complete checkpoint")
    resume.add_argument("run_dir", metavar="RUN_DIR")
    sweep = sub.add_parser(
        "sweep",
        help="run a grid of runs on every core (or GPU)",
        description="Run a grid: spec flags give the base, --vary and --seeds (or --grid FILE "
        "with [base] and [grid] tables) the points. Re-running skips finished points.",
    )
    sweep.add_argument("--sweep-dir", required=True, help="folder of the sweep")
    sweep.add_argument("--grid", metavar="FILE", help="TOML with [base] and [grid] tables")
    sweep.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="a spec field and its values (integer ranges as A-B); repeatable. Linked fields "
        "vary together: --vary model,sparsity_k=scc-dni:4,cc-dni:0",
    )
    sweep.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 0-9 or 0,3,7")
    sweep.add_argument(
        "--slots",
        type=int,
        default=os.cpu_count() or 1,
        help="concurrent runs on the CPU (default: the number of cores)",
    )
    sweep.add_argument(
        "--runs-per-gpu",
        type=int,
        default=2,
        help="concurrent runs per GPU with --device cuda (every GPU) or cuda:N (GPU N); each "
        "run's regions go on its GPU",
    )
    sweep.add_argument(
        "--report", action="store_true", help="draw the sweep's report when it is done"
    )
    changed = sweep.add_mutually_exclusive_group()
    changed.add_argument(
        "--new",
        action="store_true",
        help="if SWEEP_DIR records a different sweep, start this one in a new folder beside "
        "it (SWEEP_DIR-2, ...) instead of refusing",
    )
    changed.add_argument(
        "--force",
        action="store_true",
        help="if SWEEP_DIR records a different sweep, run this one there anyway: the old "
        "sweep.toml, results.csv and the runs that are not finished points of the new grid "
        "move to SWEEP_DIR/previous/N/ first (nothing is deleted)",
    )
    add_spec_arguments(sweep)
    report = sub.add_parser(
        "report",
        help="figures and a markdown table of a sweep",
        description="Draw what the sweep's grid allows into SWEEP/figures/ — M/N × K heat map "
        "of the final error (paper Fig. 5, S3b, S5), learning-curve grid (S3a, S4), error vs "
        "r_h / r_pop_h and r_g / r_pop_g over epochs (Fig. 2e,f, S6), error vs T with seed "
        "error bars (Fig. 2d) — and a table into SWEEP/report.md.",
    )
    bench = sub.add_parser(
        "bench",
        help="a benchmark (decoupling: locked vs backward-unlocked chains of areas)",
        description="Run a benchmark; the arguments after its name go to it "
        "(python launch.py bench decoupling --help).",
    )
    sub.add_parser(  # parsed by ccdni.tasks.captions.build (see main)
        "captions-corpus",
        help="build the MNIST-scene caption corpus and its visual cortex (cached)",
        add_help=False,
    )
    sub.add_parser(  # parsed by experiments.claims (see main)
        "claims",
        help="measure the paper's claims, write docs/claims.md (--quick: CI-sized)",
        add_help=False,
    )
    bench.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's arguments")
    report.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the sweep directory")
    report.add_argument(
        "--metric",
        default=None,
        help="results column of the final error (default: last5_val_error_pct, "
        "last5_val_mse_x100 or last5_val_mse, whichever the runs have)",
    )
    return parser


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    overrides = {
        name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None
    }
    return load_spec(args.spec, **overrides)


COMMANDS = (
    "run",
    "ablate",
    "revive",
    "status",
    "stop",
    "resume",
    "sweep",
    "report",
    "bench",
    "captions-corpus",
    "claims",
)
CONTROL_COMMANDS = ("status", "ablate", "revive", "stop")  # no torch on their path
BENCHMARKS = ("decoupling",)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "captions-corpus":  # its own flags: python launch.py captions-corpus -h
        from ccdni.tasks.captions.build import main as build_corpus

        return build_corpus(argv[1:])
    if argv and argv[0] == "claims":  # its own flags: python launch.py claims -h
        from experiments.claims import main as claims

        return claims(argv[1:])
    parser = build_parser()
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    try:
        return dispatch(parser, args)
    except OSError as exc:  # an unwritable or full directory, a file gone missing: one line
        sys.stderr.write(f"launch.py {args.command}: error: {describe_error(exc)}\n")
        return 2


def describe_error(exc: OSError) -> str:
    """One line for an I/O error: the run directory's own errors name their file already."""
    from ccdni.base.rundir import RunDirectoryError

    if isinstance(exc, RunDirectoryError) or not exc.filename:
        text = str(exc) or type(exc).__name__
    else:
        text = f"{exc.filename}: {exc.strerror or exc}"
    return " ".join(text.split())


def dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed command; every error the user can cause is one line and exit 2.

    The control commands (``status``, ``ablate``, ``revive``, ``stop``) import neither torch
    nor the runner: they read ``regions.json`` and send one message, in a fraction of a
    second (tests/test_cli_imports.py checks it)."""
    from orchestrator.client import ControlError

    if args.command in CONTROL_COMMANDS:
        try:
            return command_status(args) if args.command == "status" else command_control(args)
        except ControlError as exc:
            sys.stderr.write(f"launch.py {args.command}: error: {exc}\n")
            return 2
    if args.command == "report":
        return command_report(args)
    if args.command == "bench":
        return command_bench(args)
    from ccdni.tasks.mnist_data import DataMissingError

    if args.command == "run":
        try:
            spec = spec_from_args(args)
            return command_run(spec)
        except (SpecError, DataMissingError) as exc:
            parser.error(str(exc))
    if args.command == "sweep":
        try:
            return command_sweep(args)
        except (SpecError, DataMissingError) as exc:
            parser.error(str(exc))
    from orchestrator.runner import ResumeError, resume_run

    try:
        return report_outcome(resume_run(args.run_dir))
    except (ControlError, ResumeError, DataMissingError) as exc:
        sys.stderr.write(f"launch.py {args.command}: error: {exc}\n")
        return 2


def command_bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"benchmarks.{args.name}")
    program = sys.argv[0]
    sys.argv[0] = f"launch.py bench {args.name}"  # its --help and errors name this command
    try:
        return module.main(list(args.args))
    finally:
        sys.argv[0] = program


def command_run(spec: RunSpec) -> int:
    from orchestrator.runner import execute_run

    return report_outcome(execute_run(spec))


def report_outcome(outcome: Any) -> int:
    """The summary line (what ran, how far, how long, whether the same seed gives the same
    numbers, the final numbers, the run directory), then a line for lesions and revivals
    with their epochs and one naming the figures."""
    s = outcome.summary
    final = ", ".join(f"{k}={v:.4g}" for k, v in s["final"].items())
    exact = "" if s.get("deterministic", True) else f" (not deterministic: timing {s['timing']})"
    print(
        f"{s['status']}: {s['task']} {s['model']}"
        + ("" if s["truncation"] is None else f" T={s['truncation']}")
        + f" seed={s['seed']} "
        f"[{s['mode']}] {s['epochs_completed']}/{s['epochs']} epochs in {s['wall_seconds']:.1f} s"
        f"{exact}; {final}; run directory {outcome.run.path}"
    )
    happened = [
        f"{x['region']} lesioned "
        + ("before the start" if x.get("phase") == "start-up" else f"at epoch {x['epoch']}")
        for x in s.get("lesions", [])
    ]
    happened += [
        f"{x['region']} revived at epoch {x['epoch']}"
        + (" from its checkpoint" if x.get("from_checkpoint") else "")
        for x in s.get("revivals", [])
    ]
    happened += [f"resumed at epoch {epoch}" for epoch in s.get("resumes", [])]
    if happened:
        print("  events: " + "; ".join(happened))
    if s.get("figures"):
        print("  figures: " + ", ".join(str(outcome.run.path / f) for f in s["figures"]))
    for lesion in s.get("lesions", []):
        if lesion.get("detected_by") == "schedule":
            continue  # in-process: the events line says it
        when = "before the run started" if lesion["phase"] == "start-up" else "at epoch"
        at = "" if lesion["phase"] == "start-up" else f" {lesion['epoch']}"
        print(
            f"note: {lesion['region']} lesioned {when}{at} ({lesion['cause']}; detected by "
            f"{lesion['detected_by']}): the run went on without it",
            file=sys.stderr,
        )
    if s.get("io_error"):
        print(f"launch.py: error: {s['io_error']} (the run {s['status']})", file=sys.stderr)
        return 2
    if s["reason"]:
        print(f"reason: {s['reason']}", file=sys.stderr)
    return 0 if s["status"] == "completed" else 1


def command_control(args: argparse.Namespace) -> int:
    from orchestrator.client import ControlError, send_command

    extra = {}
    if args.command in ("ablate", "revive"):
        extra["region"] = args.region
    if args.command == "revive":
        extra["from_checkpoint"] = args.from_checkpoint
    reply = send_command(Path(args.run_dir), args.command, **extra)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")))
    what = {"ablate": "ablated", "revive": "reviving", "stop": "stopping"}[args.command]
    print(f"{what} {extra.get('region', 'the run')} in {reply.get('run')}")
    return 0


def command_status(args: argparse.Namespace) -> int:
    """Running runs under ``--runs-dir``, or one run's regions. A run whose orchestrator pid is
    gone says "orchestrator dead" (its regions.json could not be updated by it), with every
    region's liveness read from its pid, never the stale recorded state."""
    from orchestrator.client import ControlError, pid_alive, read_regions, run_state, running_runs
    from orchestrator.client import send_command as ask

    if args.run_dir is None:
        runs = running_runs(Path(args.runs_dir))
        if not runs:
            print(f"no running runs under {args.runs_dir}")
        for run in runs:
            regions = read_regions(run)["regions"]
            states = ", ".join(
                f"{name}:{'lesioned' if r['lesioned'] else r['state']}"
                for name, r in regions.items()
            )
            print(f"{run}  {states}")
        return 0
    recorded = read_regions(Path(args.run_dir))
    state = run_state(recorded)
    regions = recorded["regions"]
    if state == "running":
        try:
            regions = ask(Path(args.run_dir), "status")["regions"]
        except ControlError:
            state = run_state(read_regions(Path(args.run_dir)))
    pid = recorded["orchestrator"].get("pid")
    if state == "orchestrator dead":
        print(f"{args.run_dir}: orchestrator dead (pid {pid} is gone)")
    else:
        print(f"{args.run_dir}: {state}")
    print(
        f"{'region':<12}{'pid':>8}  {'alive':<6}{'lesioned':<9}{'state':<18}{'epoch':>6}  heartbeat"
    )
    for name, r in regions.items():
        alive = r.get("alive", False) if state == "running" else pid_alive(r.get("pid"))
        shown = r["state"]
        if state == "orchestrator dead" and shown not in ("exited", "lesioned"):
            shown = "orchestrator dead"
        beat = r.get("last_heartbeat_s")
        beat_text = f"{beat:.1f} s ago" if state == "running" and beat is not None else "—"
        print(
            f"{name:<12}{r['pid'] or '—'!s:>8}  {'yes' if alive else 'no':<6}"
            f"{'yes' if r['lesioned'] else 'no':<9}{shown:<18}{r['epoch']:>6}  {beat_text}"
        )
    return 0


def command_sweep(args: argparse.Namespace) -> int:
    from ccdni.base.logs import configure_logging
    from ccdni.base.spec import read_toml
    from orchestrator.sweep import Sweep, load_grid, parse_values

    base: dict = {}
    grids: list[dict] = [{}]
    if args.grid:
        base, grids = load_grid(args.grid)
        grids = grids or [{}]
    if args.spec:
        base.update(read_toml(args.spec))
    base.update({n: getattr(args, n) for n in FIELDS if getattr(args, n, None) is not None})
    base.pop("progress", None)  # the sweep's own display; each run is started without one
    axes: dict = {}
    for item in args.vary:
        name, sep, values = item.partition("=")
        if not sep:
            raise SpecError(f"--vary {item!r} must look like FIELD=V1,V2 or F1,F2=A1:A2,B1:B2")
        axis = name.replace("-", "_").replace(" ", "")
        axes[axis] = parse_values(axis, values)
    if args.seeds:
        axes["seed"] = parse_values("seed", args.seeds)
    grids = [{**grid, **axes} for grid in grids]  # --vary and --seeds apply to every grid
    if args.slots < 1 or args.runs_per_gpu < 1:
        raise SpecError("--slots and --runs-per-gpu must be at least 1")
    for name in ("run_name", "runs_dir"):
        if name in base or any(name in axis.split(",") for g in grids for axis in g):
            raise SpecError(f"{name} is set by the sweep itself")
    sweep_dir = Path(args.sweep_dir)
    check_sweep_data(base, grids, sweep_dir)
    log = configure_logging("sweep", None, console=True)
    sweep = Sweep(
        sweep_dir,
        base,
        grids,
        args.slots,
        base.get("device", "cpu"),
        args.runs_per_gpu,
        log,
        new=args.new,
        force=args.force,
    )
    sweep.check_recorded()  # a different sweep recorded there: refused before anything runs
    sweep_dir = sweep.dir  # --new: the folder beside it
    if sweep.changes:
        log.warning("sweep_changed", sweep_dir=str(sweep_dir), changes=sweep.changes)
    invalid = [p for p in sweep.points if p.status == "invalid"]
    for point in invalid:
        log.warning("invalid_point", point=point.name, reason=point.error)
    interactive = sys.stderr.isatty() and args.progress is not False
    with SweepProgress(sweep, log, interactive) as progress:
        points = sweep.run(progress=progress)
    counts = {
        s: sum(p.status == s for p in points) for s in ("completed", "skipped", "failed", "invalid")
    }
    print(
        f"sweep {sweep_dir}: {counts['completed']} ran, {counts['skipped']} already done, "
        f"{counts['failed']} failed, {counts['invalid']} invalid; results in {sweep.results_path}"
    )
    for point in points:
        if point.status in ("failed", "invalid"):
            print(f"  {point.status}: {point.name}: {point.error}", file=sys.stderr)
    if args.report:
        command_report(argparse.Namespace(sweep_dir=str(sweep_dir), metric=None))
    return 0 if counts["failed"] == 0 and counts["invalid"] == 0 else 1


def check_sweep_data(base: dict, grid: dict | list[dict], sweep_dir: Path) -> None:
    """Check every data set the grid needs once, before the sweep folder is made."""
    from orchestrator.runner import check_task_data
    from orchestrator.sweep import expand

    checked = set()
    for point in expand(base, grid, sweep_dir):
        spec = point.spec
        key = spec and (spec.task, str(spec.resolved_data_dir), spec.download)
        if spec is not None and key not in checked:
            checked.add(key)
            check_task_data(spec)


class SweepProgress:
    """Runs done / running / failed with an ETA: a rich progress display on a terminal, log
    lines otherwise. Each finished run is announced once (its wall time and final error, or
    why it failed).

    The ETA is the time left at the rate this session finishes runs (which counts the
    concurrency): ``(points still to finish) × elapsed / (runs finished so far)``.
    """

    def __init__(self, sweep: Any, log: Any, interactive: bool) -> None:
        self.sweep = sweep
        self.log = log
        self.interactive = interactive
        self.total = len(sweep.points)
        self.announced: set[str] = set()
        self.last: tuple | None = None
        self.started = 0.0
        self.display: Any = None
        self.task: Any = None

    def __enter__(self) -> SweepProgress:
        import time

        self.started = time.monotonic()
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.display = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn(
                    "[green]{task.fields[done]} done[/] [cyan]{task.fields[running]} running[/]"
                    " [red]{task.fields[failed]} failed[/]"
                ),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self.display.__enter__()
            self.task = self.display.add_task(
                f"{self.sweep.dir.name} ×{self.sweep.concurrency}",
                total=self.total,
                done=0,
                running=0,
                failed=0,
                eta="—",
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.display is not None:
            self.display.__exit__(*exc)
            self.display = None

    def counts(self, points: list) -> tuple[int, int, int, float | None]:
        import time

        done = sum(p.status in ("completed", "skipped") for p in points)
        running = sum(p.status == "running" for p in points)
        failed = sum(p.status in ("failed", "invalid") for p in points)
        finished_here = sum(p.status in ("completed", "failed") for p in points)
        left = self.total - done - failed
        elapsed = time.monotonic() - self.started
        eta = elapsed / finished_here * left if finished_here and left else None
        return done, running, failed, (0.0 if not left else eta)

    def announce(self, point: Any) -> None:
        """One line for a run that just finished (or a point that could not start)."""
        self.announced.add(point.name)
        if point.status == "skipped":
            return
        final = point.summary.get("last5_mean") or point.summary.get("final") or {}
        score = ", ".join(f"{k}={v:.4g}" for k, v in final.items() if k.startswith("val_"))
        if self.display is not None:
            if point.status == "completed":
                text = f"[green]✓[/] {point.name}  {point.wall:.1f} s  {score}"
            else:
                text = f"[red]✗ {point.status}[/] {point.name}: {point.error}"
            self.display.console.print(text, highlight=False, markup=True)
        elif point.status == "completed":
            self.log.info("run_finished", point=point.name, wall_seconds=round(point.wall, 2))
        else:
            self.log.warning(
                "run_failed", point=point.name, status=point.status, reason=point.error
            )

    def __call__(self, points: list) -> None:
        for point in points:
            if point.name not in self.announced and point.status in (
                "completed",
                "failed",
                "invalid",
                "skipped",
            ):
                self.announce(point)
        done, running, failed, eta = self.counts(points)
        eta_text = "—" if eta is None else _duration(eta)
        if self.display is not None:
            self.display.update(
                self.task,
                completed=done + failed,
                done=done,
                running=running,
                failed=failed,
                eta=eta_text,
            )
            return
        state = (done, running, failed)
        if state == self.last:
            return
        self.last = state
        self.log.info(
            "sweep_progress",
            done=done,
            running=running,
            failed=failed,
            total=self.total,
            eta=eta_text,
        )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def command_report(args: argparse.Namespace) -> int:
    """Figures and a markdown table of a sweep (see :mod:`ccdni.reporting.sweep_report`)."""
    from ccdni.reporting.sweep_report import ReportError, write_report

    try:
        report = write_report(Path(args.sweep_dir), metric=args.metric)
    except ReportError as exc:
        sys.stderr.write(f"launch.py report: error: {exc}\n")
        return 2
    print(f"report {report.markdown} ({len(report.figures)} figures)")
    for path in report.figures:
        print(f"  {path}")
    for line in report.skipped:
        print(f"  not drawn: {line}")
    return 0
