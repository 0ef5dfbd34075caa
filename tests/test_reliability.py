"""Nothing hangs, nothing is lost: start-up faults, safe resume, sweeps that refuse to overwrite,
hostile names, one-line errors, silent regions, and the fault-injection script in small."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import assert_no_process_left, records

from ccdni.base.checkpoint import load_checkpoint, save_checkpoint
from ccdni.base.spec import SEQUENCE_STEPS, SpecError, load_spec
from orchestrator.cli import main as cli_main
from orchestrator.client import send_command
from orchestrator.runner import execute_run

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]


def wait_for(predicate, timeout: float, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def area_epochs(run: Path) -> list[dict]:
    return [r for r in records(run / "metrics.jsonl") if r["region"] == "area0" and "epoch" in r]


def events_of(run: Path, name: str, **match) -> list[dict]:
    return [
        e
        for e in records(run / "events.jsonl")
        if e["event"] == name and all(e.get(k) == v for k, v in match.items())
    ]


def run_in_thread(spec):
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(outcome=execute_run(spec, console=False)))
    thread.start()
    return thread, box


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` → its bytes (None for a folder)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``launch.py ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli_main(args)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def launch(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- start-up faults -------------------------------------------------------------------------------


def test_cerebellum_killed_during_startup_is_a_lesion_at_epoch_0(tmp_path: Path) -> None:
    """kill -9 of the cerebellum right after it is spawned: detected within 2 s, a lesion at
    epoch 0; the run starts as soon as the others are ready (not after the 120 s start-up
    timeout), completes every epoch without the cerebellum, and writes nothing outside its
    run directory."""
    before_tmp = set(Path("/tmp").glob("ccdni-*"))
    spec = load_spec(epochs=4, runs_dir=str(tmp_path), figures=False, progress=False)
    assert spec.startup_timeout == 120
    thread, box = run_in_thread(spec)
    run = wait_for(lambda: next(iter(tmp_path.glob("*")), None), 60)
    spawn = wait_for(lambda: events_of(run, "spawn", region="cerebellum"), 60)[0]
    os.kill(spawn["pid"], signal.SIGKILL)
    killed = time.time()
    thread.join(200)
    assert not thread.is_alive()
    summary = box["outcome"].summary
    assert summary["status"] == "completed", summary["reason"]
    (exit_event,) = events_of(run, "exit", region="cerebellum")
    assert exit_event["phase"] == "start-up" and exit_event["exitcode"] == -signal.SIGKILL
    assert exit_event["time"] - killed <= 2.0
    assert exit_event["latency_from"] == "sentinel_check"
    assert 0 <= exit_event["detection_latency_s"] <= 2.0
    (lesion,) = events_of(run, "lesion", region="cerebellum")
    assert lesion["epoch"] == 0 and lesion["phase"] == "start-up"
    assert summary["lesions"][0]["region"] == "cerebellum"
    last_ready = max(e["time"] for e in events_of(run, "ready"))
    all_ready = events_of(run, "all_ready")[0]["time"]
    assert all_ready - last_ready < 1.0 and all_ready - killed < 60
    assert [r["epoch"] for r in area_epochs(run)] == [0, 1, 2, 3]
    assert all(r["predictions"] == 0 for r in area_epochs(run))
    assert [p.name for p in tmp_path.iterdir()] == [run.name]
    assert set(Path("/tmp").glob("ccdni-*")) == before_tmp
    assert_no_process_left(run, expected_regions=3)


# -- resume --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A run whose area was killed after 6 or more of its 30 epochs (a resumable run)."""
    root = tmp_path_factory.mktemp("interrupted")
    spec = load_spec(epochs=30, runs_dir=str(root), run_name="r", figures=False, progress=False)
    thread, box = run_in_thread(spec)
    run = root / "r"
    wait_for(lambda: len(area_epochs(run)) >= 6, 120, step=0.05)
    pid = json.loads((run / "regions.json").read_text())["regions"]["area0"]["pid"]
    os.kill(pid, signal.SIGKILL)
    thread.join(120)
    assert box["outcome"].summary["status"] == "failed"
    assert_no_process_left(run)
    return run


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def foreign_spec(path: Path) -> None:
    saved = load_checkpoint(path)
    other = load_spec(path.parents[1] / "spec.toml").replace(seed=99)
    save_checkpoint(path, saved.state, saved.region, saved.epoch, other)


def another_region(path: Path) -> None:
    shutil.copyfile(path.with_name("cerebellum.pt"), path)


def earlier_epoch(path: Path) -> None:
    saved = load_checkpoint(path)
    spec = load_spec(path.parents[1] / "spec.toml")
    epoch = saved.epoch - 3
    save_checkpoint(path, {**saved.state, "epoch": epoch}, saved.region, epoch, spec)


@pytest.mark.parametrize(
    ("damage", "file", "reason"),
    [
        (Path.unlink, "area0.pt", "area0.pt: checkpoint does not exist; the run recorded"),
        (truncate, "area0.pt", "area0.pt: the file is damaged"),
        (truncate, "cerebellum.pt", "cerebellum.pt: the file is damaged"),
        (flip_a_byte, "olive.pt", "olive.pt: "),
        (foreign_spec, "area0.pt", "area0.pt: written for another spec"),
        (another_region, "area0.pt", "area0.pt: written by region 'cerebellum', not 'area0'"),
        (earlier_epoch, "area0.pt", "the checkpoint is from another point of the run"),
    ],
    ids=["missing", "truncated", "truncated-cerebellum", "altered-olive", "foreign-spec",
         "other-region", "earlier-epoch"],
)  # fmt: skip
def test_resume_refuses_a_bad_checkpoint_and_changes_nothing(
    interrupted_run: Path, tmp_path: Path, damage, file: str, reason: str
) -> None:
    """resume with a missing, truncated, altered or foreign checkpoint is refused with one
    line naming the file and what is wrong, exit status 2, and the run directory is byte for
    byte what it was."""
    run = tmp_path / "r"
    shutil.copytree(interrupted_run, run)
    damage(run / "checkpoints" / file)
    before = snapshot(run)
    result = launch("resume", str(run), timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("launch.py resume: error: ") and reason in lines[0], lines[0]
    assert str(run / "checkpoints" / file) in lines[0]
    assert snapshot(run) == before


def test_resume_refuses_altered_metrics(interrupted_run: Path, tmp_path: Path) -> None:
    """resume refuses a run whose metrics.jsonl lost a recorded epoch of the area (it would
    be rewritten), changing nothing."""
    run = tmp_path / "r"
    shutil.copytree(interrupted_run, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    first_area = next(i for i, line in enumerate(lines) if '"region": "area0"' in line)
    (run / "metrics.jsonl").write_text("\n".join(lines[:first_area] + lines[first_area + 1 :]))
    before = snapshot(run)
    result = launch("resume", str(run), timeout=120)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "metrics.jsonl: area0's epochs are not recorded once each" in result.stderr
    assert snapshot(run) == before


# -- sweeps ----------------------------------------------------------------------------------------


def test_sweep_rerun_with_a_changed_spec_refuses_and_force_keeps_the_old(tmp_path: Path) -> None:
    """A sweep re-run whose spec differs from its sweep.toml is refused with the difference and
    changes nothing; with --force it runs and the old results survive in previous/1/; with
    --new it goes into a new folder beside the old one."""
    sweep = tmp_path / "demo"
    common = ["sweep", "--sweep-dir", str(sweep), "--inprocess", "--no-figures", "--slots", "1"]
    first = launch(*common, "--epochs", "2", "--vary", "seed=0")
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(sweep)
    refused = launch(*common, "--epochs", "3", "--vary", "seed=0")
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "records another sweep (epochs: 2 → 3)" in refused.stderr
    assert snapshot(sweep) == before
    forced = launch(*common, "--epochs", "3", "--vary", "seed=0", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    old = sweep / "previous" / "1"
    assert (old / "results.csv").read_bytes() == before["results.csv"]
    assert (old / "sweep.toml").read_bytes() == before["sweep.toml"]
    assert (old / "differences.txt").read_text() == "epochs: 2 → 3\n"
    assert json.loads((old / "runs" / "seed=0" / "summary.json").read_text())["epochs"] == 2
    assert json.loads((sweep / "runs" / "seed=0" / "summary.json").read_text())["epochs"] == 3
    new = launch(*common, "--epochs", "4", "--vary", "seed=0", "--new")
    assert new.returncode == 0, new.stderr[-2000:]
    beside = tmp_path / "demo-2"
    assert json.loads((beside / "runs" / "seed=0" / "summary.json").read_text())["epochs"] == 4
    assert json.loads((sweep / "runs" / "seed=0" / "summary.json").read_text())["epochs"] == 3


# -- names, paths, one-line errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../escape", "a/b", "..", ".hidden", "-x", "with space", "semi;colon"]
)
def test_hostile_run_names_are_refused(tmp_path: Path, capsys, name: str) -> None:
    """A run name with a path separator, '..', a leading '.' or '-', or a character outside the
    safe set is refused with one line and exit status 2, before anything is written."""
    runs = tmp_path / "deep" / "runs"
    code, _, err = cli([f"--run-name={name}", "--runs-dir", str(runs), "--epochs", "1"], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and f"run name {name!r}" in err, err
    assert list(tmp_path.iterdir()) == []


def test_hostile_sweep_names_are_refused(tmp_path: Path, capsys) -> None:
    """A sweep folder named '..' (or with characters outside the safe set) is refused with one
    line and exit status 2."""
    for sweep_dir in (tmp_path / "x" / "..", tmp_path / "bad name"):
        code, _, err = cli(["sweep", "--sweep-dir", str(sweep_dir), "--inprocess"], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and "sweep name" in err, err
    assert list(tmp_path.iterdir()) == []


def unshare_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("how", ["under-a-file", "read-only", "full"])
def test_unwritable_runs_directory_is_one_line_exit_2(tmp_path: Path, how: str) -> None:
    """A runs directory that cannot be created, is read-only, or is on a full disk gives one
    error line naming it and exit status 2 — no traceback — and leaves no partial run."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = ["--epochs", "1", "--no-figures", "--run-name", "r"]
    if how == "under-a-file":
        result = launch("--runs-dir", str(blocker / "runs"), *args)
        assert "cannot create the runs directory" in result.stderr
    elif os.geteuid() != 0 and how == "read-only":
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
        result = launch("--runs-dir", str(target), *args)
        target.chmod(0o700)
    else:  # root ignores permissions: a read-only or tiny tmpfs in a private mount namespace
        if not unshare_available():
            pytest.skip("needs unshare -rm to mount a tmpfs as an unprivileged user")
        target = tmp_path / "mnt"
        target.mkdir()
        options = "ro,size=64k" if how == "read-only" else "size=4k"
        fill = "" if how == "read-only" else f"head -c 4096 /dev/zero > {target}/filler; "
        command = (
            f"mount -t tmpfs -o {options} tmpfs {target} && {fill}"
            f"{sys.executable} launch.py --runs-dir {target} {' '.join(args)}; "
            f"status=$?; test -e {target}/r && echo partial run left >&2; exit $status"
        )
        result = subprocess.run(
            ["unshare", "-rm", "sh", "-c", command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert lines and lines[0].startswith("launch.py run: error: ")
    assert len(lines) == 1, lines  # also: no partial run was left
    assert "Traceback" not in result.stderr
    if how == "full":
        assert "No space left on device" in lines[0]


def test_dni_with_truncation_beyond_the_sequence_is_refused(capsys, tmp_path: Path) -> None:
    """A DNI model whose truncation spans a whole sequence (the cerebellum would never be
    consulted) is refused with one line and exit status 2; the LSTM at that T is fine, and
    the sequence lengths the check uses are the tasks' own."""
    code, _, err = cli(["--truncation", "1000", "--runs-dir", str(tmp_path)], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "truncation=1000 with model cc-dni" in err and "never be consulted" in err
    for model in ("cc-dni", "scc-dni", "zero-dni"):
        with pytest.raises(SpecError, match="never be consulted"):
            load_spec(model=model, truncation=10)
        load_spec(model=model, truncation=9)
    assert load_spec(model="lstm", truncation=1000).truncation == 1000
    with pytest.raises(SpecError, match="28 steps"):
        load_spec(task="seqmnist", truncation=28)
    from ccdni.tasks.captions.task import CaptionTask
    from ccdni.tasks.seqmnist import N_STEPS
    from ccdni.tasks.target_reaching import TargetReaching

    assert SEQUENCE_STEPS["target-reaching"] == TargetReaching.n_steps
    assert SEQUENCE_STEPS["seqmnist"] == N_STEPS
    assert SEQUENCE_STEPS["captions"] == CaptionTask.n_steps
    assert list(tmp_path.iterdir()) == []


# -- a silent cerebellum ---------------------------------------------------------------------------


def test_sigstopped_cerebellum_is_lesioned_then_revived(tmp_path: Path) -> None:
    """A SIGSTOPped cerebellum (alive but silent) is detected by its missing heartbeats and
    treated as a lesion (the areas train without it); after SIGCONT and ``revive`` the same
    process is used again."""
    spec = load_spec(
        epochs=100_000,
        heartbeat_timeout=2.0,
        runs_dir=str(tmp_path),
        run_name="s",
        figures=False,
        progress=False,
    )
    thread, box = run_in_thread(spec)
    run = tmp_path / "s"
    try:
        wait_for(lambda: len(area_epochs(run)) >= 5, 120, step=0.05)
        pid = json.loads((run / "regions.json").read_text())["regions"]["cerebellum"]["pid"]
        os.kill(pid, signal.SIGSTOP)
        stopped = time.time()
        lesion = wait_for(lambda: events_of(run, "lesion", region="cerebellum"), 30)[0]
        (silent,) = events_of(run, "unresponsive", region="cerebellum")
        assert silent["detected_by"] == "heartbeat" and silent["process_state"] == "T"
        assert silent["silent_s"] >= 2.0  # heartbeat_timeout since its last heartbeat,
        assert 2.0 - 0.5 <= silent["time"] - stopped <= 2.0 + 2.0  # which came ≤ 0.5 s before
        assert lesion["process_alive"] and lesion["cause"].startswith("unresponsive")
        without = len(area_epochs(run)) + 1  # the epoch the stop fell into may have had some
        wait_for(lambda: len(area_epochs(run)) >= without + 5, 60, step=0.05)
        assert all(r["predictions"] == 0 for r in area_epochs(run)[without:])
        status = send_command(run, "status")["regions"]["cerebellum"]
        assert status["alive"] and status["lesioned"] and status["unresponsive"]
        refused = send_command(run, "revive", region="cerebellum")
        assert not refused["ok"] and "silent" in refused["error"]
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: events_of(run, "responsive", region="cerebellum"), 30)
        reply = send_command(run, "revive", region="cerebellum")
        assert reply["ok"], reply
        revived = len(area_epochs(run))
        wait_for(
            lambda: any(r["predictions"] > 0 for r in area_epochs(run)[revived:]), 60, step=0.05
        )
        assert send_command(run, "stop")["ok"]
        thread.join(60)
    finally:
        if thread.is_alive():
            send_command(run, "stop")
            thread.join(60)
    assert box["outcome"].summary["status"] == "stopped"
    (revive,) = events_of(run, "revive", region="cerebellum")
    assert revive["reinstated"] and revive["pid"] == pid
    assert [e["pid"] for e in events_of(run, "spawn", region="cerebellum")] == [pid]
    assert_no_process_left(run, expected_regions=3)


# -- the fault-injection script ---------------------------------------------------------------------


def test_fault_injection_in_small_loses_no_epoch(tmp_path: Path) -> None:
    """``benchmarks.faults`` with a small N runs every scenario class it draws and reports 0
    epochs lost, 0 stray processes and 0 stray socket files."""
    out = tmp_path / "faults.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.faults",
            "--n",
            "6",
            "--seed",
            "3",
            "--parallel",
            "2",
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert sum(c["total"] for c in report["classes"].values()) == 6
    for name, row in report["classes"].items():
        assert row["epochs_lost"] == 0, (name, row)
        assert row["stray_processes"] == 0 and row["stray_sockets"] == 0, (name, row)
        assert row["survived"] == row["total"], (name, row, report["failures"])
    assert "epochs lost" in result.stdout
