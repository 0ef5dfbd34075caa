"""Every command the README shows works as written: each ``python launch.py …`` and
``python -m …`` line parses (every flag exists, every value is accepted) with the parser of
the command it calls, and the cheap ones run to the end with a tiny budget."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """The ``python launch.py`` / ``python -m`` commands of the README's shell blocks and of
    its inline code, one per entry: continuation lines joined, ``&&`` chains and ``;`` split,
    comments, a trailing ``&`` and ``$(...)`` substitutions left out."""
    text = README.read_text()
    blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S)
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks += re.findall(r"`(python (?:launch\.py|-m)\b[^`]*)`", outside)
    commands = []
    for block in blocks:
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = re.sub(r"\$\([^)]*\)", "X", line)
            for part in re.split(r"&&|;|\|", line):
                try:
                    tokens = shlex.split(part, comments=True)
                except ValueError:
                    continue
                if tokens and tokens[-1] == "&":
                    tokens = tokens[:-1]
                if tokens[:2] == ["python", "launch.py"] or tokens[:2] == ["python", "-m"]:
                    commands.append(shlex.join(tokens))
    return commands


COMMANDS = readme_commands()


class Parsed(Exception):
    """Raised instead of running a command once its arguments parsed."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def parse_only(main, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Call a command's ``main(argv)`` but stop right after its parser accepted ``argv``;
    a refused argument fails the test with argparse's message."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    with pytest.raises(Parsed) as parsed:
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code == 0 and ("--help" in argv or "-h" in argv):
                raise Parsed(argparse.Namespace(command="help")) from None
            pytest.fail(f"refused: {shlex.join(argv)} (exit status {exc.code})")
    monkeypatch.undo()
    return parsed.value.namespace


def test_the_readme_shows_commands() -> None:
    """The extraction finds the README's commands (a change of format must not empty it)."""
    assert len(COMMANDS) >= 20, COMMANDS
    assert "python launch.py" in COMMANDS
    assert any(c.startswith("python launch.py bench decoupling") for c in COMMANDS)
    assert any(c.startswith("python -m experiments.") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's own parser accepts every flag and value of the README line."""
    tokens = shlex.split(command)
    if tokens[:2] == ["python", "-m"]:
        module, argv = tokens[2], tokens[3:]
        if module == "pytest" or module.rpartition(".")[2].isupper():
            return  # not ours, or a placeholder (python -m experiments.NAME)
        extra: list[str] = []
        if "--" in argv:
            cut = argv.index("--")
            extra = argv[cut + 1 :]
        parse_only(importlib.import_module(module).main, argv, monkeypatch)
        if module == "experiments.decoupling_vs_k":  # the flags after -- go to the benchmark
            from benchmarks import decoupling

            parse_only(decoupling.main, extra, monkeypatch)
        return
    from orchestrator.cli import BENCHMARKS, build_parser, main

    argv = tokens[2:]
    if argv[:1] == ["bench"]:
        args = build_parser().parse_args(argv)  # the bench command, then the benchmark's own
        assert args.name in BENCHMARKS
        benchmark = importlib.import_module(f"benchmarks.{args.name}")
        parse_only(benchmark.main, list(args.args), monkeypatch)
        return
    namespace = parse_only(main, argv, monkeypatch)
    if getattr(namespace, "command", None) in ("run", "sweep"):
        from orchestrator.cli import spec_from_args

        if namespace.spec is None:  # the values make a valid spec (a --spec FILE is an example)
            spec_from_args(namespace)


# commands run as written with a tiny budget appended (later flags win); the others are
# parsed only: they run long (a sweep of 45 runs, the caption corpus, fault injection, the
# experiments), need a running run (the control commands, exercised in test_cli_imports.py),
# or name a file the reader makes (runs/RUN, my_run.toml)
TINY = ("--epochs", "2", "--train-subset", "200", "--val-subset", "100", "--no-figures")
CHEAP_RUNS = [
    c
    for c in COMMANDS
    if c.startswith("python launch.py")
    and not re.search(r"\b(status|ablate|revive|stop|resume|sweep|report|claims|captions)", c)
    and "RUN" not in c
    and "--spec" not in c
    and "bench" not in c
]


def test_some_readme_commands_are_run() -> None:
    """The cheap set holds the default run and the chain runs (it must not shrink unseen)."""
    assert "python launch.py" in CHEAP_RUNS
    assert sum("--topology chain" in c for c in CHEAP_RUNS) >= 2
    assert len(CHEAP_RUNS) >= 7, CHEAP_RUNS


def launch(argv: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", CHEAP_RUNS)
def test_cheap_readme_runs_complete(command: str, tmp_path: Path) -> None:
    """The README's run commands, with a tiny budget, complete and print their summary."""
    argv = shlex.split(command)[2:]
    if argv == ["run", "--help"]:
        result = launch(argv, tmp_path)
        assert result.returncode == 0 and "--cerebellum-hidden" in result.stdout
        return
    # a scheduled lesion must fall inside the tiny budget
    argv = [re.sub(r"@epoch=\d+", "@epoch=1", a) for a in argv]
    result = launch([*argv, *TINY, "--runs-dir", str(tmp_path), "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("completed: "), result.stdout
    assert "2/2 epochs" in result.stdout


def test_readme_benchmark_runs(tmp_path: Path) -> None:
    """The README's quick decoupling benchmark runs as written (two of its four modes, to
    save time) and prints its per-mode table."""
    benches = [c for c in COMMANDS if c.startswith("python launch.py bench decoupling")]
    quick = [c for c in benches if "--train-subset" in c]
    assert len(benches) == 2 and len(quick) == 1, benches
    argv = shlex.split(quick[0])[2:]
    argv += ["--mode", "locked,backward-unlocked", "--runs-dir", str(tmp_path)]
    result = launch(argv, tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backward-unlocked" in result.stdout and "samples/s" in result.stdout
