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
from typing import NoReturn

from orchestrator.spec import FIELDS, LESIONABLE, RunSpec, SpecError, load_spec

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
    """argparse, but an error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per spec field, with the field's doc and default as help."""
    parser.add_argument("--spec", metavar="FILE", help="TOML spec file (flags override it).")
    grouped = {name for _, names in GROUPS for name in names}
    groups = [(title, names) for title, names in GROUPS]
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
        help="a spec field and its values (integer ranges as A-B); repeatable",
    )
    sweep.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 0-9 or 0,3,7")
    sweep.add_argument(
        "--slots",
        type=int,
        default=os.cpu_count() or 1,
        help="concurrent runs on the CPU (default: the number of cores)",
    )
    sweep.add_argument(
        "--runs-per-gpu", type=int, default=2, help="concurrent runs per GPU with --device cuda"
    )
    add_spec_arguments(sweep)
    return parser


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    overrides = {
        name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None
    }
    return load_spec(args.spec, **overrides)


COMMANDS = ("run", "ablate", "revive", "status", "stop", "resume", "sweep")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.command == "run":
        try:
            spec = spec_from_args(args)
        except SpecError as exc:
            parser.error(str(exc))
        return command_run(spec)
    if args.command == "sweep":
        try:
            return command_sweep(args)
        except SpecError as exc:
            parser.error(str(exc))
    from orchestrator.client import ControlError
    from orchestrator.runner import ResumeError

    try:
        if args.command == "resume":
            from orchestrator.runner import resume_run

            return report_outcome(resume_run(args.run_dir))
        if args.command == "status":
            return command_status(args)
        return command_control(args)
    except (ControlError, ResumeError) as exc:
        sys.stderr.write(f"launch.py {args.command}: error: {exc}\n")
        return 2


def command_run(spec: RunSpec) -> int:
    from orchestrator.runner import execute_run

    return report_outcome(execute_run(spec))


def report_outcome(outcome) -> int:
    s = outcome.summary
    final = ", ".join(f"{k}={v:.4g}" for k, v in s["final"].items())
    print(
        f"{s['status']}: {s['task']} {s['model']} T={s['truncation']} seed={s['seed']} "
        f"[{s['mode']}] {s['epochs_completed']}/{s['epochs']} epochs in {s['wall_seconds']:.1f} s; "
        f"{final}; run directory {outcome.run.path}"
    )
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
    from orchestrator.client import ControlError, read_regions, running_runs, send_command

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
    try:
        reply = send_command(Path(args.run_dir), "status")
        regions, live = reply["regions"], True
    except ControlError:
        regions, live = read_regions(Path(args.run_dir))["regions"], False
    print(f"{args.run_dir}: {'running' if live else 'not running'}")
    print(
        f"{'region':<12}{'pid':>8}  {'alive':<6}{'lesioned':<9}{'state':<11}{'epoch':>6}  heartbeat"
    )
    for name, r in regions.items():
        beat = "—" if r.get("last_heartbeat_s") is None else f"{r['last_heartbeat_s']:.1f} s ago"
        print(
            f"{name:<12}{r['pid'] or '—'!s:>8}  {'yes' if r['alive'] and live else 'no':<6}"
            f"{'yes' if r['lesioned'] else 'no':<9}{r['state']:<11}{r['epoch']:>6}  {beat}"
        )
    return 0


def command_sweep(args: argparse.Namespace) -> int:
    from orchestrator.logs import configure_logging
    from orchestrator.spec import read_toml
    from orchestrator.sweep import Sweep, load_grid, parse_values

    base: dict = {}
    grid: dict = {}
    if args.grid:
        base, grid = load_grid(args.grid)
    if args.spec:
        base.update(read_toml(args.spec))
    base.update({n: getattr(args, n) for n in FIELDS if getattr(args, n, None) is not None})
    for item in args.vary:
        name, sep, values = item.partition("=")
        if not sep:
            raise SpecError(f"--vary {item!r} must look like FIELD=V1,V2")
        if name.replace("-", "_") not in FIELDS:
            raise SpecError(f"--vary: unknown spec field {name!r}")
        grid[name.replace("-", "_")] = parse_values(name.replace("-", "_"), values)
    if args.seeds:
        grid["seed"] = parse_values("seed", args.seeds)
    if args.slots < 1 or args.runs_per_gpu < 1:
        raise SpecError("--slots and --runs-per-gpu must be at least 1")
    for name in ("run_name", "runs_dir"):
        if name in base or name in grid:
            raise SpecError(f"{name} is set by the sweep itself")
    sweep_dir = Path(args.sweep_dir)
    log = configure_logging("sweep", None, console=True)
    sweep = Sweep(sweep_dir, base, grid, args.slots, base.get("device", "cpu"), args.runs_per_gpu)
    invalid = [p for p in sweep.points if p.status == "invalid"]
    for point in invalid:
        log.warning("invalid_point", point=point.name, reason=point.error)
    points = sweep.run(progress=SweepProgress(len(sweep.points), log))
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
    return 0 if counts["failed"] == 0 and counts["invalid"] == 0 else 1


class SweepProgress:
    """Runs done / running / failed with an ETA: a rich bar on a terminal, log lines otherwise."""

    def __init__(self, total: int, log) -> None:
        self.total = total
        self.log = log
        self.last = None
        self.started = None

    def __call__(self, points) -> None:
        import time

        now = time.monotonic()
        self.started = self.started or now
        done = sum(p.status in ("completed", "skipped") for p in points)
        running = sum(p.status == "running" for p in points)
        failed = sum(p.status in ("failed", "invalid") for p in points)
        state = (done, running, failed)
        if state == self.last:
            return
        self.last = state
        ran = sum(p.status == "completed" for p in points)
        left = self.total - done - failed
        eta = (now - self.started) / ran * left if ran else None
        text = f"{done}/{self.total} done, {running} running, {failed} failed"
        if eta is not None:
            text += f", ETA {eta:.0f} s"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + text.ljust(70))
            sys.stderr.flush()
        else:
            self.log.info(
                "sweep_progress",
                done=done,
                running=running,
                failed=failed,
                total=self.total,
                eta_seconds=eta,
            )
