"""The command line: ``python launch.py [run] [--field value ...] [--spec FILE]``.

With no arguments it runs the default experiment (target reaching, CC-DNI, T=2, three
processes). Every spec field is a flag; a bad flag or value prints one error line and exits
with status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from orchestrator.spec import FIELDS, RunSpec, SpecError, load_spec

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
        "brain region its own process.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    run = sub.add_parser(
        "run",
        help="run one experiment (the default command)",
        description="Run one experiment. Every spec field is a flag; precedence: defaults → "
        "task preset → --spec FILE → flags.",
    )
    add_spec_arguments(run)
    return parser


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    overrides = {
        name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None
    }
    return load_spec(args.spec, **overrides)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        spec = spec_from_args(args)
    except SpecError as exc:
        parser.error(str(exc))
    return command_run(spec)


def command_run(spec: RunSpec) -> int:
    from orchestrator.runner import execute_run

    outcome = execute_run(spec)
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
