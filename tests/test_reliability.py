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
        code = exc.code if isinstance(exc.code, int) else 1
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


def test_resume_restores_epochs_a_dead_orchestrator_never_recorded(tmp_path: Path) -> None:
    """An area that finished every epoch while its orchestrator was already dead (its last
    metrics never reached metrics.jsonl, no summary) is resumed by restoring those epochs'
    records from its checkpoint: the run completes with every epoch recorded once, the
    recorded ones untouched."""
    from orchestrator.runner import resume_run

    spec = load_spec(
        epochs=8, timing="lockstep", runs_dir=str(tmp_path), run_name="r", figures=False
    )
    spec = spec.replace(progress=False)
    assert execute_run(spec, console=False).summary["status"] == "completed"
    run = tmp_path / "r"
    full = {r["epoch"]: r for r in area_epochs(run)}
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    area_lines = [i for i, line in enumerate(lines) if '"region": "area0"' in line]
    kept = "".join(lines[: area_lines[-3]])  # the last three epochs of area0 never arrived
    (run / "metrics.jsonl").write_text(kept)
    (run / "summary.json").unlink()
    outcome = resume_run(run, console=False)
    assert outcome.summary["status"] == "completed"
    assert outcome.summary["epochs_completed"] == 8
    after = (run / "metrics.jsonl").read_text()
    assert after.startswith(kept)
    restored = area_epochs(run)
    assert [r["epoch"] for r in restored] == list(range(8))
    assert [r["train_loss"] for r in restored] == [full[e]["train_loss"] for e in range(8)]
    (resume,) = events_of(run, "resume")
    assert resume["epoch"] == 8 and resume["metrics_restored"] == 3


def test_template_leaves_with_its_orchestrator(tmp_path: Path) -> None:
    """After a run ends the region template (the forkserver the regions are forked from) is
    gone within 2 s (it skips the interpreter's seconds-long teardown); an orchestrator
    killed while the template still imports leaves no socket file, and no process once the
    template has finished its imports."""
    tag = f"ccdni-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "CCDNI_TEST_TAG": tag}

    def tagged() -> list[int]:
        marker = f"CCDNI_TEST_TAG={tag}".encode()
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in environ and state != b"Z":
                found.append(int(entry))
        return found

    common = ["--epochs", "2", "--runs-dir", str(tmp_path), "--no-figures", "--no-progress"]
    done = subprocess.run(
        [sys.executable, "launch.py", *common, "--run-name", "done"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ended = time.monotonic()
    wait_for(lambda: not tagged(), 10, step=0.02)
    assert time.monotonic() - ended <= 2.0
    killed = subprocess.Popen(
        [sys.executable, "launch.py", *common, "--run-name", "killed"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = tmp_path / "killed"
    wait_for(lambda: (run / "spec.toml").exists(), 120, step=0.005)
    time.sleep(0.1)
    killed.kill()
    killed.wait(30)
    wait_for(lambda: not tagged(), 120, step=0.05)  # a template still importing ends after
    assert [p for p in run.rglob("*") if p.is_socket()] == []


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


def mark_after(barrier, path: str, name: str, epoch: int) -> None:
    from ccdni.base.region import mark_orchestrator_dead

    barrier.wait(10)
    mark_orchestrator_dead(Path(path), 4242, name, epoch)


def test_orphans_marking_regions_json_together_lose_no_update(tmp_path: Path) -> None:
    """Three orphans rewriting regions.json at the same instant each leave their mark (dead,
    'orchestrator dead', the area's last epoch): none of their updates is lost to another's,
    and no temporary file is left."""
    import multiprocessing

    regions = tmp_path / "regions.json"
    names = {"area0": 7, "cerebellum": 0, "olive": 0}
    context = multiprocessing.get_context("fork")
    for _ in range(10):
        entry = {"alive": True, "state": "running", "epoch": 3, "last_heartbeat_s": 0.1}
        regions.write_text(
            json.dumps(
                {
                    "orchestrator": {"pid": 4242, "alive": True, "state": "running"},
                    "regions": {name: dict(entry) for name in names},
                }
            )
        )
        barrier = context.Barrier(len(names))
        workers = [
            context.Process(target=mark_after, args=(barrier, str(regions), name, epoch))
            for name, epoch in names.items()
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
            assert worker.exitcode == 0
        data = json.loads(regions.read_text())
        assert data["orchestrator"]["state"] == "dead" and not data["orchestrator"]["alive"]
        for name, entry in data["regions"].items():
            assert not entry["alive"] and entry["state"] == "orchestrator dead", (name, entry)
            assert entry["last_heartbeat_s"] is None
        assert [data["regions"][n]["epoch"] for n in names] == [7, 3, 3]
        assert [p.name for p in tmp_path.iterdir()] == ["regions.json"]


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


def test_sigstopped_olive_stays_lesioned_after_sigcont_in_lockstep(tmp_path: Path) -> None:
    """A SIGSTOPped olive under lockstep is lesioned by its missing heartbeats; after SIGCONT it
    speaks again but stays lesioned until revived, so the cerebellum waits for no error of it
    and the area goes on training (found by the fault-injection suite: the cerebellum took the
    olive's hello for a return, waited for errors that never came, and the area failed)."""
    spec = load_spec(
        epochs=100_000,
        timing="lockstep",
        heartbeat_timeout=2.0,
        runs_dir=str(tmp_path),
        run_name="o",
        figures=False,
        progress=False,
    )
    thread, box = run_in_thread(spec)
    run = tmp_path / "o"
    try:
        wait_for(lambda: len(area_epochs(run)) >= 3, 120, step=0.05)
        pid = json.loads((run / "regions.json").read_text())["regions"]["olive"]["pid"]
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: events_of(run, "lesion", region="olive"), 30)
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: events_of(run, "responsive", region="olive"), 30)
        after = len(area_epochs(run))
        wait_for(lambda: len(area_epochs(run)) >= after + 5, 60, step=0.05)
        status = send_command(run, "status")["regions"]["olive"]
        assert status["alive"] and status["lesioned"]
        assert send_command(run, "stop")["ok"]
        thread.join(60)
    finally:
        if thread.is_alive():
            send_command(run, "stop")
            thread.join(60)
    assert box["outcome"].summary["status"] == "stopped", box["outcome"].summary["reason"]
    cerebellum = [r for r in records(run / "metrics.jsonl") if "olive_lesioned" in r]
    assert cerebellum[-1]["olive_lesioned"]
    assert_no_process_left(run, expected_regions=3)


# -- the fault-injection script ---------------------------------------------------------------------


SMALL_FAULT_CLASSES = ("kill-startup", "kill-mid-epoch", "kill-orchestrator")


def test_fault_injection_in_small_loses_no_epoch(tmp_path: Path) -> None:
    """``benchmarks.faults`` with a small N — seed 320 draws a cerebellum killed 0.05 s after
    its spawn, the area killed during epoch 4 (then resumed) and the orchestrator killed
    mid-run (orphans, status, resume); runs of 10-14 epochs, all three at once — survives
    every scenario and reports 0 epochs lost, 0 stray processes and 0 stray socket files."""
    out = tmp_path / "faults.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.faults",
            "--n",
            str(len(SMALL_FAULT_CLASSES)),
            "--classes",
            ",".join(SMALL_FAULT_CLASSES),
            "--min-epochs",
            "10",
            "--max-epochs",
            "14",
            "--seed",
            "320",
            "--parallel",
            str(len(SMALL_FAULT_CLASSES)),
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
    details = {s["cls"]: s["detail"] for s in report["scenarios"]}
    assert details["kill-startup"].startswith("kill -9 cerebellum 0.05 s after its spawn")
    assert details["kill-mid-epoch"].startswith("kill -9 area0 during epoch 4")
    assert details["kill-orchestrator"].startswith("kill -9 the orchestrator at mid-run")
    assert set(report["classes"]) == set(SMALL_FAULT_CLASSES)
    assert all(c["total"] == 1 for c in report["classes"].values())
    for name, row in report["classes"].items():
        assert row["epochs_lost"] == 0, (name, row)
        assert row["stray_processes"] == 0 and row["stray_sockets"] == 0, (name, row)
        assert row["survived"] == row["total"], (name, row, report["failures"])
    assert "epochs lost" in result.stdout
