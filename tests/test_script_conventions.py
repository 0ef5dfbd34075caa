"""The experiment and benchmark scripts follow ``launch.py run``'s conventions: ``--help``
describes every option, the ones that read MNIST take ``--data-dir`` and ``--download``, and a
missing data folder is one line and exit 2 before anything is run or written."""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest

from orchestrator.cli import ScriptParser

SCRIPTS = [
    "experiments.captions",
    "experiments.claims",
    "experiments.correlation",
    "experiments.decoupling_vs_k",
    "experiments.fig2_target_reaching",
    "experiments.fig6_ablation",
    "experiments.fig7_forward_dni",
    "experiments.seqmnist",
    "experiments.sparsity_expansion",
    "benchmarks.backends",
    "benchmarks.decoupling",
    "benchmarks.faults",
    "benchmarks.learning_stages",
    "benchmarks.lesion_latency",
    "benchmarks.profile_regions",
    "benchmarks.roundtrip",
    "benchmarks.sweep_throughput",
    "benchmarks.transport",
]
READ_MNIST = {  # the scripts whose runs read MNIST
    "experiments.captions",
    "experiments.claims",
    "experiments.decoupling_vs_k",
    "experiments.fig7_forward_dni",
    "experiments.seqmnist",
    "benchmarks.decoupling",
    "benchmarks.roundtrip",
}


def options_of(module: str, monkeypatch, capsys) -> dict[str, argparse.Action]:
    """The options of the script's parser, read from its ``--help`` (which must exit 0)."""
    seen: list[ScriptParser] = []
    original = ScriptParser.format_help

    def format_help(self: ScriptParser) -> str:
        seen.append(self)
        return original(self)

    monkeypatch.setattr(ScriptParser, "format_help", format_help)
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main() if main.__code__.co_argcount == 0 else main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert seen, f"{module} does not build its parser with ScriptParser"
    return {
        action.option_strings[-1]: action
        for action in seen[0]._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    }


@pytest.mark.parametrize("module", SCRIPTS)
def test_help_describes_every_option_and_data_flags_exist(module, monkeypatch, capsys) -> None:
    """Each option has a description besides its default, and MNIST readers take the data flags."""
    options = options_of(module, monkeypatch, capsys)
    for name, action in options.items():
        words = (action.help or "").split("(default:")[0].strip()
        assert words, f"{module} {name}: no description in --help"
    if module in READ_MNIST:
        assert {"--data-dir", "--download"} <= options.keys(), module


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("experiments.seqmnist", ["--budget", "quick", "--inline"]),
        ("experiments.claims", ["--quick", "--claim", "4a"]),
        ("experiments.decoupling_vs_k", ["--ks", "2"]),
        ("experiments.fig7_forward_dni", ["--epochs", "1"]),
        ("benchmarks.roundtrip", ["--only", "epochs", "--task", "seqmnist"]),
    ],
)
def test_missing_data_is_one_line_and_exit_2_before_anything_runs(
    module, argv, tmp_path, monkeypatch, capsys
) -> None:
    """With no MNIST where it points, the script exits 2 with one line naming the folder and
    --download, and writes nothing (no sweep folder, page or figure)."""
    missing = tmp_path / "no-data"
    out = tmp_path / "out"
    where = {
        "experiments.seqmnist": ["--sweeps-root", str(out), "--doc", str(out / "page.md")],
        "experiments.claims": ["--sweeps-root", str(out), "--doc", str(out / "page.md")],
        "experiments.decoupling_vs_k": ["--out", str(out)],
        "experiments.fig7_forward_dni": ["--figure", str(out / "figure.png")],
        "benchmarks.roundtrip": ["--json", str(out / "figures.json")],
    }[module]
    monkeypatch.setenv("CCDNI_DATA", str(missing))
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *where])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "--download" in err[0], err
    assert not out.exists()


def test_a_data_dir_flag_reaches_the_runs_as_the_environment_not_as_a_spec_field(
    tmp_path, monkeypatch
) -> None:
    """``--data-dir`` is checked and handed on as $CCDNI_DATA, so the runs' specs (and the
    reuse of finished runs) do not depend on how the folder was named."""
    from ccdni.base.spec import load_spec
    from experiments.common import add_mnist_flags, prepare_mnist

    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images", "train-labels", "t10k-images", "t10k-labels"):
        kind = "idx3" if "images" in name else "idx1"
        (raw / f"{name}-{kind}-ubyte").write_bytes(b"")
    monkeypatch.setenv("CCDNI_DATA", str(tmp_path / "elsewhere"))
    parser = ScriptParser()
    add_mnist_flags(parser)
    args = parser.parse_args(["--data-dir", str(tmp_path / "data")])
    assert prepare_mnist(parser, args) == (tmp_path / "data").resolve()
    spec = load_spec()
    assert spec.data_dir == "" and spec.resolved_data_dir == (tmp_path / "data").resolve()
