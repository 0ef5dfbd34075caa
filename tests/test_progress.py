"""The live table: it lays out whole at 80 columns (nothing cut to "…"), shows the area's
batch within its epoch on a wide terminal, and says where the run is inside the epoch with
samples/s and the time left, measured from the heartbeats."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console, Group

from ccdni.base.spec import load_spec
from orchestrator import progress as progress_module
from orchestrator.progress import Progress


def region(name: str, role: str, **fields) -> SimpleNamespace:
    values = {
        "pid": 4_194_304,  # the longest pid Linux gives
        "alive": True,
        "lesioned": False,
        "state": "training",
        "epoch": 3,
        "batch": 0,
        "batches": 0,
        "sent": 123_456,
        "received": 123_456,
        "rejected": 0,
    }
    metrics = {k: fields.pop(k) for k in list(fields) if k not in values}
    values.update(fields)
    return SimpleNamespace(name=name, role=role, last_metrics=metrics, **values)


def regions() -> dict[str, SimpleNamespace]:
    return {
        "area0": region(
            "area0", "area", batch=120, batches=480, train_loss=2.30412, val_error_pct=88.6532
        ),
        "cerebellum": region("cerebellum", "cerebellum", state="lesioned", lesioned=True),
        "olive": region("olive", "olive", state="comparing", cerebellar_loss=1.234567e-05),
    }


def render(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_table_fits_80_columns_whole_and_grows_a_batch_column() -> None:
    """At 80 columns every heading and value is shown whole; at 160 the batch column
    appears; the cerebellum's lesion is in its state."""
    shown = Progress(load_spec(task="seqmnist", truncation=5), log=None, enabled=False)
    where = {"epoch": 3, "batch": 120, "batches": 480, "samples_per_s": 2134.0}
    where["seconds_left"] = 725.0
    narrow = render(Group(shown.table(regions(), 80), shown.status_line(where)), 80)
    text = "\n".join(narrow)
    assert all(len(line) <= 80 for line in narrow)
    assert "…" not in text
    for word in ("cerebellum", "4194304", "lesioned", "comparing", "3/25", "2.304", "88.65"):
        assert word in text, word
    assert "1.23e-05" in text and "val err%" in text and "batch" not in narrow[2]
    assert narrow[-1] == "epoch 4/25 · batch 120/480 · 2.1k samples/s · 12:05 left"
    wide = "\n".join(render(shown.table(regions(), 160), 160))
    assert "batch" in wide and "120/480" in wide and "…" not in wide


def test_samples_per_second_and_time_left_come_from_the_heartbeats(monkeypatch) -> None:
    """Batches reported over time give the training rate (× batch size) and the time left
    from the fraction of the run done so far; before any progress the time left is unknown."""
    spec = load_spec(task="seqmnist", truncation=5, epochs=2)
    shown = Progress(spec, log=None, enabled=False)
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    state = regions()
    state["area0"].epoch, state["area0"].batch = 0, 0
    first = shown.estimate(state)
    assert first["seconds_left"] is None and first["samples_per_s"] is None
    clock[0] += 4.0
    state["area0"].batch = 96  # a fifth of the first epoch: a tenth of the run in 4 s
    later = shown.estimate(state)
    assert later["samples_per_s"] == 96 / 4.0 * spec.batch_size
    assert later["seconds_left"] == 4.0 / 0.1 * 0.9
    assert shown.status_line(later).plain.endswith("0:36 left")


def test_the_position_never_goes_back_when_areas_finish_an_epoch_out_of_step() -> None:
    """Two areas end epoch 0 one after the other, each with its last heartbeat a few batches
    short of the end (their epoch metrics come first): the slowest area's place only grows."""
    shown = Progress(load_spec(), log=None, enabled=False)
    a = region("area0", "chain-area", epoch=0, batch=296, batches=300)
    b = region("area1", "chain-area", epoch=0, batch=299, batches=300)
    state = {"area0": a, "area1": b}
    places = [shown.position(state)]
    a.epoch, a.batch = 1, 0  # area0's epoch metrics (as the orchestrator records them)
    places.append(shown.position(state))
    b.epoch, b.batch = 1, 0  # area1's
    places.append(shown.position(state))
    a.epoch, a.batch = 0, 300  # a heartbeat while area0 waits for the others' validation
    places.append(shown.position(state))
    b.epoch, b.batch = 1, 7  # area1 is into epoch 1
    places.append(shown.position(state))
    assert places == [(0, 296, 300), (0, 299, 300), (1, 0, 300), (1, 0, 300), (1, 0, 300)]
    done = [e + batch / batches for e, batch, batches in places]
    assert done == sorted(done)


def test_chain_areas_report_their_batch_inside_the_epoch(tmp_path, monkeypatch) -> None:
    """A chain run through processes: each chain area's heartbeats carry its batches done of
    the epoch's total, which the live table's position reads (the slowest area's)."""
    from tests.conftest import run_chain

    seen: list[tuple[int, int, int]] = []  # (epoch, batch, batches) from the table's position

    def update(self, regions) -> None:
        epoch, batch, batches = self.position(regions)
        if batches:
            seen.append((epoch, batch, batches))

    monkeypatch.setattr(Progress, "update", update)
    spec = load_spec(
        topology="chain",
        chain_areas=2,
        chain_mode="backward-unlocked",
        chain_width=16,
        train_subset=3000,
        val_subset=100,
        batch_size=10,
        epochs=1,
        heartbeat_interval=0.02,
        runs_dir=str(tmp_path),
        figures=False,
        progress=False,
    )
    run, outcome = run_chain(spec)
    assert outcome["status"] == "completed", outcome
    assert seen and {batches for _, _, batches in seen} == {300}
    inside = [batch for _, batch, _ in seen if 0 < batch < 300]
    assert inside, seen[:5]  # heard from the middle of the epoch, not only its ends
    assert inside == sorted(inside)  # batches done only grow within the epoch
