"""Shared test set-up: the MNIST folder defaults to ../shared/data beside the repository (as in
CI), unless CCDNI_DATA says otherwise; nothing is ever downloaded in tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ccdni.base.logs import configure_logging
from ccdni.base.rundir import RunDirectory
from orchestrator.launcher import Supervisor
from orchestrator.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CCDNI_DATA", str(ROOT.parent / "shared" / "data"))
torch.set_num_threads(1)  # two cores are shared by every region and the test process


def records(path: Path) -> list[dict]:
    """The JSON lines of a run-directory file (empty if it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_no_process_left(run: Path, expected_regions: int | None = None) -> None:
    """Every process the run spawned is gone, and so is its socket folder."""
    pids = [e["pid"] for e in records(run / "events.jsonl") if e["event"] == "spawn"]
    assert pids, "no region was spawned"
    if expected_regions is not None:
        assert len(pids) == expected_regions, pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (run / "sock").exists(), "socket folder left behind"


def per_epoch(run: Path) -> dict[tuple[str, int], dict]:
    """(region, epoch) → that region's metric record for the epoch."""
    return {(r["region"], r["epoch"]): r for r in records(run / "metrics.jsonl") if "epoch" in r}


def assert_same_losses(reference: Path, run: Path) -> dict[tuple[str, int], dict]:
    """The area's and olive's per-epoch numbers of ``run`` equal the reference's (1e-6).

    Returns the compared reference records, for further checks by the caller."""
    want = {k: v for k, v in per_epoch(reference).items() if k[0] in ("area0", "olive")}
    got = {k: v for k, v in per_epoch(run).items() if k[0] in ("area0", "olive")}
    assert want.keys() == got.keys()
    for key, record in want.items():
        for name in ("train_loss", "val_mse", "cerebellar_loss"):
            if name in record:
                assert got[key][name] == pytest.approx(record[name], rel=1e-6, abs=1e-6), (
                    key,
                    name,
                )
    return want


def run_chain(spec) -> tuple[RunDirectory, dict]:
    """Run a chain spec through the Supervisor (processes, no display); (run, outcome)."""
    run = RunDirectory.create(spec)
    log = configure_logging("orchestrator", run.log_path("orchestrator"), "info", console=False)
    with Progress(spec, log, enabled=False) as progress:
        outcome = Supervisor(spec, run, log, progress).execute()
    return run, outcome
