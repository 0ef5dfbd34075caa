"""On a CUDA machine: the regions really run on the GPU and still equal their reference.

Marked ``cuda``: ``python -m pytest -m cuda`` runs only these (benchmarks/gpu_check.sh does);
without a CUDA device they are skipped with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_no_process_left, assert_same_losses, per_epoch

from ccdni.base.spec import load_spec
from orchestrator.runner import execute_run

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.timeout(300),
]


def test_lockstep_on_the_gpu_equals_its_inprocess_run(tmp_path: Path) -> None:
    """cc-dni on cuda: lockstep processes equal the in-process run on cuda (1e-5)."""
    common = dict(
        device="cuda", epochs=5, timing="lockstep", runs_dir=str(tmp_path), figures=False,
        progress=False,
    )  # fmt: skip
    reference = execute_run(load_spec(inprocess=True, run_name="ref", **common), console=False)
    processes = execute_run(load_spec(run_name="proc", **common), console=False)
    assert processes.summary["status"] == "completed", processes.summary["reason"]
    assert_same_losses(reference.run.path, processes.run.path)
    assert_no_process_left(processes.run.path)


def test_regions_report_the_gpu_they_run_on(tmp_path: Path) -> None:
    """Every region's log says it was placed on cuda, and the run's numbers are close to the
    same run on the CPU (float differences only)."""
    common = dict(epochs=4, runs_dir=str(tmp_path), figures=False, progress=False, inprocess=False)
    gpu = execute_run(load_spec(device="cuda", run_name="gpu", timing="lockstep", **common), False)
    cpu = execute_run(load_spec(device="cpu", run_name="cpu", timing="lockstep", **common), False)
    for region in ("area0", "cerebellum", "olive"):
        lines = (gpu.run.path / "logs" / f"{region}.jsonl").read_text().splitlines()
        placed = [json.loads(line) for line in lines if '"placed"' in line]
        assert placed and placed[0]["device"].startswith("cuda"), region
    want, got = per_epoch(cpu.run.path), per_epoch(gpu.run.path)
    for key, record in want.items():
        if key[0] == "area0":
            assert got[key]["val_mse"] == pytest.approx(record["val_mse"], rel=1e-3)
