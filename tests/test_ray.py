"""The Ray backend: regions as Ray actors on a local Ray started by the test, over tcp with
CURVE — the same numbers as the in-process reference, a killed cerebellum actor is a lesion,
and no actor or worker process outlives the run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import assert_same_losses, records

from ccdni.base.spec import load_spec
from orchestrator.runner import execute_run

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

pytestmark = pytest.mark.timeout(420)


def test_ray_run_equals_inprocess_and_survives_an_actor_kill(tmp_path: Path) -> None:
    """A lockstep run through Ray actors with the cerebellum actor killed (ray.kill) at epoch 3
    gives the in-process run's per-epoch numbers (1e-6), records the kill as a lesion, and
    leaves no actor process alive."""
    common = dict(
        model="cc-dni",
        epochs=5,
        seed=4,
        timing="lockstep",
        ablate="cerebellum@epoch=3",
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    reference = execute_run(load_spec(inprocess=True, run_name="ref", **common), console=False)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        spec = load_spec(backend="ray", transport="tcp", run_name="ray", **common)
        outcome = execute_run(spec, console=False)
        assert outcome.summary["status"] == "completed", outcome.summary["reason"]
        run = outcome.run.path
        assert_same_losses(reference.run.path, run)
        events = records(run / "events.jsonl")
        (ablate,) = [e for e in events if e["event"] == "ablate"]
        assert ablate["region"] == "cerebellum" and ablate["epoch"] == 3
        assert any(e["event"] == "lesion" and e["region"] == "cerebellum" for e in events)
        pids = [e["pid"] for e in events if e["event"] == "spawn"]
        assert len(pids) == 3 and os.getpid() not in pids  # every region its own actor process
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(pid) for pid in pids):
            time.sleep(0.2)
        assert not [pid for pid in pids if alive(pid)], "an actor process outlived the run"
    finally:
        ray.shutdown()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
