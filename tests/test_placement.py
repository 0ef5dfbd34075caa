"""Placement: areas pinned to cores on CPU, areas spread over GPUs (time-slicing noted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccdni.base.region import apply_placement
from ccdni.base.spec import SpecError, load_spec
from orchestrator.placement import parse_devices, plan_placement, region_names
from orchestrator.runner import execute_run
from tests.conftest import ROOT, assert_no_process_left, records

CHAIN = ["area0", "area1", "cerebellum", "olive"]


def test_pinned_areas_get_one_core_each_and_the_rest_float() -> None:
    spec = load_spec(topology="chain", chain_areas=2, pin_cores=True)
    plan = plan_placement(spec, CHAIN, cores=(0, 1), n_cuda=0)
    assert plan.regions["area0"].cores == (0,)
    assert plan.regions["area1"].cores == (1,)
    assert plan.regions["cerebellum"].cores is None  # nothing left: floats
    assert plan.regions["olive"].device == "cpu"
    assert any("float over all 2 cores" in note for note in plan.notes)


def test_spare_cores_go_to_the_cerebellum_and_olive() -> None:
    spec = load_spec(topology="chain", chain_areas=2, pin_cores=True)
    plan = plan_placement(spec, CHAIN, cores=(2, 3, 5, 7), n_cuda=0)
    assert [plan.regions[a].cores for a in ("area0", "area1")] == [(2,), (3,)]
    assert plan.regions["cerebellum"].cores == (5, 7) == plan.regions["olive"].cores
    assert plan.notes == ()


def test_more_areas_than_cores_share_them_and_say_so() -> None:
    spec = load_spec(topology="chain", chain_areas=3, pin_cores=True)
    regions = ["area0", "area1", "area2"]
    plan = plan_placement(spec, regions, cores=(0, 1), n_cuda=0)
    assert [plan.regions[a].cores for a in regions] == [(0,), (1,), (0,)]
    assert any("3 areas on 2 cores" in note for note in plan.notes)


def test_unpinned_regions_float() -> None:
    spec = load_spec(topology="chain", chain_areas=2)
    plan = plan_placement(spec, CHAIN, cores=(0, 1), n_cuda=0)
    assert all(p.cores is None for p in plan.regions.values())
    assert any("4 processes share 2 cores" in note for note in plan.notes)


def test_areas_round_robin_over_gpus_and_time_slicing_is_noted() -> None:
    spec = load_spec(topology="chain", chain_areas=3, area_devices="cuda:0,cuda:1")
    plan = plan_placement(spec, ["area0", "area1", "area2"], cores=(0,), n_cuda=2)
    assert [plan.regions[f"area{k}"].device for k in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    (note,) = [n for n in plan.notes if "time-sliced" in n]
    assert "area0, area2 share cuda:0" in note


def test_one_gpu_per_area_has_no_time_slicing_note() -> None:
    spec = load_spec(topology="chain", chain_areas=2, area_devices="cuda:0,cuda:1")
    plan = plan_placement(spec, ["area0", "area1"], cores=(0, 1), n_cuda=2)
    assert not any("time-sliced" in n for n in plan.notes)
    assert "area1: cuda:1" in plan.describe()


@pytest.mark.parametrize(
    ("devices", "n_cuda", "message"),
    [
        ("cuda:0", 0, "no CUDA device"),
        ("cuda:0,cuda:2", 2, "has 2 CUDA device(s)"),
    ],
)
def test_impossible_devices_are_one_clear_error(devices: str, n_cuda: int, message: str) -> None:
    spec = load_spec(topology="chain", chain_areas=2, area_devices=devices)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_placement(spec, ["area0", "area1"], cores=(0,), n_cuda=n_cuda)


def test_spec_refuses_malformed_or_meaningless_placement() -> None:
    with pytest.raises(SpecError, match="'gpu0' is not a torch device"):
        load_spec(area_devices="cuda:0,gpu0")
    with pytest.raises(SpecError, match="not with inprocess"):
        load_spec(inprocess=True, pin_cores=True)


def test_a_sweep_will_not_pin_concurrent_runs_to_the_same_cores(tmp_path: Path) -> None:
    from orchestrator.sweep import Sweep

    with pytest.raises(SpecError, match="--slots 1"):
        Sweep(tmp_path / "sweep", {"pin_cores": True}, {"seed": [0, 1]}, slots=2)
    Sweep(tmp_path / "one", {"pin_cores": True}, {"seed": [0, 1]}, slots=1)  # one at a time


def test_pinning_to_a_core_that_is_gone_is_reported_not_fatal() -> None:
    assert apply_placement({"device": "cpu", "cores": None}) is None
    if hasattr(os, "sched_setaffinity"):
        before = os.sched_getaffinity(0)
        reason = apply_placement({"device": "cpu", "cores": [100_000]})
        assert reason is not None and "cannot pin to cores [100000]" in reason
        assert os.sched_getaffinity(0) == before  # unchanged: the region runs unpinned


def test_parse_devices_strips_and_skips_empty_entries() -> None:
    assert parse_devices(" cuda:0, ,cpu ") == ("cuda:0", "cpu")


def test_region_names_follow_the_spec() -> None:
    assert region_names(load_spec(model="lstm")) == ("area0",)
    assert region_names(load_spec(model="cc-dni")) == ("area0", "cerebellum", "olive")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_pinned_processes_run_on_their_planned_core(tmp_path: Path) -> None:
    spec = load_spec(
        model="cc-dni",
        epochs=3,
        pin_cores=True,
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    outcome = execute_run(spec, console=False)
    assert outcome.summary["status"] == "completed", outcome.summary["reason"]
    run = outcome.run.path
    (event,) = [e for e in records(run / "events.jsonl") if e["event"] == "placement"]
    planned = event["regions"]["area0"]["cores"]
    assert planned is not None and len(planned) == 1
    placed = [r for r in records(run / "logs" / "area0.jsonl") if r.get("event") == "placed"]
    assert placed and placed[0]["cores"] == planned  # the area really ran on its core
    assert_no_process_left(run)


def test_a_missing_gpu_fails_before_anything_is_created(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--device",
            "cuda",
            "--epochs",
            "1",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, even on a GPU machine
    )
    assert result.returncode == 2, result.stderr
    assert "no CUDA device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
