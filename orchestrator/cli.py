"""The command line: ``python launch.py [run] [--field value ...] [--spec FILE]``.

With no arguments it runs the default experiment (target reaching, CC-DNI, T=2, three
processes). Every spec field is a flag; a bad flag or value prints one error line and exits
with status 2 before anything is written.
"""

from __future__ import annotations

import argparse
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
    return parser


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    overrides = {
        name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None
    }
    return load_spec(args.spec, **overrides)


COMMANDS = ("run", "ablate", "revive", "status", "stop", "resume")


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
