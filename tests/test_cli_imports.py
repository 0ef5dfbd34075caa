"""The command line's conventions: control commands that import no torch (so they answer in a
fraction of a second), no abbreviated flags, one-line errors, and benchmark --help texts that
name every option's default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import assert_no_process_left

ROOT = Path(__file__).resolve().parents[1]

CONTROL = textwrap.dedent(
    """
    import json, sys, time
    from orchestrator.cli import main

    run, runs = sys.argv[1], sys.argv[2]
    codes = {}
    codes["status"] = main(["status", "--runs-dir", runs])
    codes["status RUN"] = main(["status", run])
    codes["ablate"] = main(["ablate", run, "--region", "cerebellum"])
    for _ in range(100):  # until the orchestrator has seen the death (tens of ms)
        codes["revive"] = main(["revive", run, "--region", "cerebellum"])
        if codes["revive"] == 0:
            break
        time.sleep(0.1)
    codes["stop"] = main(["stop", run])
    heavy = sorted(m for m in ("torch", "torchvision", "matplotlib") if m in sys.modules)
    print("RESULT " + json.dumps({"codes": codes, "heavy": heavy}))
    """
)


def wait_running(run: Path, deadline: float) -> None:
    """Until the run's orchestrator is alive and its area has finished an epoch."""
    while time.monotonic() < deadline:
        path = run / "regions.json"
        if path.exists():
            try:
                regions = json.loads(path.read_text())
            except json.JSONDecodeError:  # being replaced
                regions = {}
            area = regions.get("regions", {}).get("area0", {})
            if regions.get("orchestrator", {}).get("alive") and area.get("epoch", 0) >= 1:
                return
        time.sleep(0.2)
    raise AssertionError(f"the run in {run} did not start in time")


def test_control_commands_import_no_torch(tmp_path: Path) -> None:
    """status, ablate, revive and stop, run in a fresh interpreter against a live run, all
    succeed and never import torch (nor torchvision or matplotlib); the stopped run's summary
    names the lesion and the revival with their epochs, says it is not deterministic, and
    lists its figures."""
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    launcher = subprocess.Popen(
        [sys.executable, "launch.py", "--epochs", "100000", "--runs-dir", str(runs)]
        + ["--run-name", "live", "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = runs / "live"
    try:
        wait_running(run, time.monotonic() + 120)
        control = subprocess.run(
            [sys.executable, "-c", CONTROL, str(run), str(runs)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        line = next(x for x in control.stdout.splitlines() if x.startswith("RESULT "))
        result = json.loads(line.removeprefix("RESULT "))
        assert result["heavy"] == [], result
        assert result["codes"] == dict.fromkeys(
            ("status", "status RUN", "ablate", "revive", "stop"), 0
        ), control.stderr
        assert "live" in control.stdout and "ablated cerebellum" in control.stdout
        out, err = launcher.communicate(timeout=120)
        assert launcher.returncode == 1, err[-2000:]  # stopped before its epochs were done
        assert out.startswith("stopped: target-reaching cc-dni T=2 seed=0"), out
        assert "cerebellum lesioned at epoch" in out and "cerebellum revived at epoch" in out
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            launcher.communicate(timeout=60)
    assert_no_process_left(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["deterministic"] is False and "wait" in summary["determinism"]
    assert [x["region"] for x in summary["revivals"]] == ["cerebellum"]
    # a stopped run gets its figures too, the reach arrays taken from the last checkpoint
    assert summary["figures"] == ["figures/learning_curve.png", "figures/trajectories.png"]
    assert "figures:" in out and str(run / "figures" / "trajectories.png") in out


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_abbreviated_flags_are_refused() -> None:
    """``--epoch 5`` is not taken for ``--epochs``: one error line, exit status 2, nothing run;
    the same holds for a benchmark's flags."""
    result = launch("--epoch", "5", "--runs-dir", "/nonexistent/never-made")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "launch.py: error: unrecognized arguments: --epoch 5"
    ]
    result = launch("bench", "decoupling", "--area", "2")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "launch.py bench decoupling: error: unrecognized arguments: --area 2"
    )


def test_benchmark_help_names_the_command_and_every_default() -> None:
    """``bench decoupling --help`` is headed by its own command and gives every option a text
    with its default, --data-dir and --download included."""
    result = launch("bench", "decoupling", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: launch.py bench decoupling [-h]")
    text = " ".join(result.stdout.partition("options:")[2].split())
    for option, default in (
        ("--areas AREAS", "(default: 2)"),
        ("--width WIDTH", "(default: 256)"),
        ("--seed SEED", "(default: 0)"),
        ("--download", "(default: off"),
        ("--data-dir DATA_DIR", "(default: $CCDNI_DATA"),
    ):
        at = text.index(option)
        assert default in text[at : at + 200], option
