"""The live progress display: one row per region (rich on a terminal, log lines otherwise).

The table fits an 80-column terminal: region, pid, state (green while alive, red once dead or
lesioned), epoch, task loss, the task's headline validation number, the cerebellar loss,
messages per second and rejected messages; a wider terminal also gets each area's batch
within its epoch. Under the table, one line says where the run is inside the current epoch
(batches done / per epoch, training samples per second) and the time left.

The time left is measured, never guessed: the run's fraction done (epochs and batches of the
slowest area, from its heartbeats) over the seconds this session has taken to get there, so
it counts validation, messaging and waits as they really are.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ccdni.tasks.base import headline

WIDE = 100  # columns from which the table also shows each area's batch
AREA_ROLES = ("area", "chain-area")  # roles whose processes are cortical areas
RATE_WINDOW = 5.0  # seconds over which samples/s is measured


class Progress:
    """Shows each region's epoch, losses, messages/s and liveness while a run goes on, and
    the run's progress inside the epoch with the time left."""

    def __init__(self, spec: Any, log: Any, enabled: bool = True):
        self.spec = spec
        self.headline = headline(spec)
        self.log = log
        self.interactive = enabled and spec.progress and sys.stderr.isatty()
        self.live: Live | None = None
        self._last_logged_epoch = -1
        self._rates: dict[str, tuple[float, int, float]] = {}
        self._samples: list[tuple[float, float]] = []  # (time, batches done in the run)
        self._first: tuple[float, float] | None = None  # (time, fraction) when first seen

    def __enter__(self) -> Progress:
        if self.interactive:
            console = Console(stderr=True)
            self.live = Live(Table(), console=console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            live, self.live = self.live, None
            with contextlib.suppress(OSError):  # the terminal went away (e.g. SIGHUP)
                live.__exit__(*exc)

    def _rate(self, name: str, messages: int) -> float:
        now = time.monotonic()
        then, count, rate = self._rates.get(name, (now, messages, 0.0))
        if now - then >= 1.0:
            rate = (messages - count) / (now - then)
            self._rates[name] = (now, messages, rate)
        elif name not in self._rates:
            self._rates[name] = (now, messages, 0.0)
        return rate

    # --- where the run is ------------------------------------------------------------------
    def position(self, regions: dict[str, Any]) -> tuple[int, int, int]:
        """(epoch, batch, batches per epoch) of the slowest area; batches 0 when unknown."""
        areas = [r for r in regions.values() if r.role in AREA_ROLES and not r.lesioned]
        if not areas:
            return 0, 0, 0
        epoch, batch, batches = min(
            (_place(r) for r in areas), key=lambda p: (p[0], p[1] / max(p[2], 1))
        )
        return max(epoch, 0), batch, batches

    def fraction(self, epoch: int, batch: int, batches: int) -> float:
        """Share of the run's training done (epochs completed plus the current epoch's part)."""
        within = batch / batches if batches else 0.0
        return min(1.0, (epoch + within) / max(self.spec.epochs, 1))

    def estimate(self, regions: dict[str, Any]) -> dict[str, Any]:
        """Epoch, batch, samples/s (training, over the last few seconds) and seconds left."""
        epoch, batch, batches = self.position(regions)
        now = time.monotonic()
        done = self.fraction(epoch, batch, batches)
        if self._first is None or done < self._first[1]:
            self._first = (now, done)
        seen = epoch * batches + batch if batches else None
        rate = None
        if seen is not None:
            self._samples.append((now, float(seen)))
            self._samples = [s for s in self._samples if now - s[0] <= RATE_WINDOW]
            (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
            if t1 - t0 >= 1.0 and b1 >= b0:
                rate = (b1 - b0) / (t1 - t0) * self.spec.batch_size
        started, at_start = self._first
        gained = done - at_start
        left = None
        if gained > 0 and now - started >= 2.0:
            left = (now - started) / gained * (1.0 - done)
        return {
            "epoch": epoch,
            "batch": batch,
            "batches": batches,
            "samples_per_s": rate,
            "seconds_left": left,
        }

    # --- showing it ----------------------------------------------------------------------------
    def update(self, regions: dict[str, Any]) -> None:
        where = self.estimate(regions)
        if self.live is not None:
            try:
                width = self.live.console.width
                self.live.update(Group(self.table(regions, width), self.status_line(where)))
            except OSError:  # the terminal went away: carry on without the display
                self.live = None
            return
        areas = [r for r in regions.values() if r.role in AREA_ROLES]
        epoch = min((r.epoch for r in areas), default=0)
        step = max(1, self.spec.epochs // 10)
        if epoch != self._last_logged_epoch and (epoch % step == 0 or epoch == self.spec.epochs):
            self._last_logged_epoch = epoch
            for region in areas:
                metrics = region.last_metrics
                self.log.info(
                    "progress",
                    area=region.name,
                    epoch=epoch,
                    of=self.spec.epochs,
                    train_loss=metrics.get("train_loss"),
                    eta=_duration(where["seconds_left"]),
                    **{self.headline.metric: metrics.get(self.headline.metric)},
                )

    def status_line(self, where: dict[str, Any]) -> Text:
        """``epoch 3/25 · batch 120/480 · 2.1k samples/s · 12:04 left``."""
        parts = [f"epoch {min(where['epoch'] + 1, self.spec.epochs)}/{self.spec.epochs}"]
        if where["batches"] > 1:
            parts.append(f"batch {where['batch']}/{where['batches']}")
        if where["samples_per_s"] is not None:
            parts.append(f"{_count(where['samples_per_s'])} samples/s")
        parts.append(f"{_duration(where['seconds_left'])} left")
        return Text(" · ".join(parts), style="bold")

    def title(self) -> str:
        spec = self.spec
        if spec.topology == "chain":
            return f"ccdni · chain K={spec.chain_areas} · {spec.chain_block} · {spec.chain_mode}"
        return f"ccdni · {spec.task} · {spec.model} · T={spec.truncation} · seed {spec.seed}"

    def table(self, regions: dict[str, Any], width: int = 80) -> Table:
        """One row per region; the batch column only from :data:`WIDE` columns on."""
        wide = width >= WIDE
        table = Table(
            title=self.title(),
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            pad_edge=False,
            collapse_padding=True,
            title_justify="left",
        )
        columns = ["region", "pid", "state", "epochs"]
        if wide:
            columns.append("batch")
        columns += ["loss", short_label(self.headline.metric), "L_C", "msg/s", "rej"]
        for column in columns:
            table.add_column(
                column,
                justify="left" if column in ("region", "state") else "right",
                no_wrap=True,
            )
        olive = regions.get("olive")
        cerebellar = olive.last_metrics.get("cerebellar_loss") if olive else None
        for region in regions.values():
            m = region.last_metrics
            is_area = region.role in AREA_ROLES
            state = "lesioned" if region.lesioned else getattr(region.state, "value", region.state)
            colour = "green" if region.alive and not region.lesioned else "red"
            cells = [
                region.name,
                str(region.pid or "—"),
                f"[{colour}]{state}[/]",
                f"{max(region.epoch, 0)}/{self.spec.epochs}" if is_area else "",
            ]
            if wide:
                batch, batches = _batch(region)
                cells.append(f"{batch}/{batches}" if batches else "")
            cells += [
                _fmt(m.get("train_loss")) if is_area else "",
                _fmt(m.get(self.headline.metric)) if is_area else "",
                _fmt(cerebellar, 3) if region.role == "olive" else "",
                _count(self._rate(region.name, region.sent + region.received)),
                str(region.rejected),
            ]
            table.add_row(*cells)
        return table


def _batch(region: Any) -> tuple[int, int]:
    """(batches done, batches per epoch) from a region's heartbeats; (0, 0) if it has none."""
    return getattr(region, "batch", 0), getattr(region, "batches", 0)


def _place(region: Any) -> tuple[int, int, int]:
    """(epoch, batches done, batches per epoch) of an area: an epoch whose training is done
    counts as the next epoch at batch 0, so a heartbeat sent while the area validates (epoch
    e, every batch done) and the metrics that follow (e + 1) place it at the same point."""
    batch, batches = _batch(region)
    if batches and batch >= batches:
        return region.epoch + 1, 0, batches
    return region.epoch, batch, batches


SHORT_LABELS = {
    "val_mse": "val MSE",
    "val_mse_x100": "MSE×100",
    "val_error_pct": "val err%",
    "val_accuracy": "val acc",
    "val_bpw": "val BPW",
}


def short_label(metric: str) -> str:
    """A column heading for the task's headline metric (``val_error_pct`` → ``val err%``)."""
    return SHORT_LABELS.get(metric, metric.removeprefix("val_")[:9])


def _fmt(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _count(value: float) -> str:
    """1234 → "1.2k", 12 → "12"."""
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def _duration(seconds: float | None) -> str:
    """ "1:02:03", "4:05", or "—" when not known yet."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"
