"""The live progress display: one row per region (rich on a terminal, log lines otherwise)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ccdni.tasks.base import headline


class Progress:
    """Shows each region's epoch, losses, messages/s and liveness while a run goes on."""

    def __init__(self, spec: Any, log: Any, enabled: bool = True):
        self.spec = spec
        self.headline = headline(spec)
        self.log = log
        self.interactive = enabled and spec.progress and sys.stderr.isatty()
        self.live: Live | None = None
        self._last_logged_epoch = -1
        self._rates: dict[str, tuple[float, int, float]] = {}

    def __enter__(self) -> Progress:
        if self.interactive:
            self.live = Live(Table(), console=Console(stderr=True), refresh_per_second=4)
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

    def update(self, regions: dict[str, Any]) -> None:
        if self.live is not None:
            try:
                self.live.update(self.table(regions))
            except OSError:  # the terminal went away: carry on without the display
                self.live = None
            return
        areas = [r for r in regions.values() if r.role == "area"]
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
                    **{self.headline.metric: metrics.get(self.headline.metric)},
                )

    def table(self, regions: dict[str, Any]) -> Table:
        table = Table(
            title=f"ccdni · {self.spec.task} · {self.spec.model} · T={self.spec.truncation}"
        )
        for column in (
            "region",
            "pid",
            "alive",
            "state",
            "epoch",
            "task loss",
            "val",
            "cerebellar loss",
            "msg/s",
            "rejected",
        ):
            table.add_column(
                column, justify="right" if column not in ("region", "state") else "left"
            )
        olive = regions.get("olive")
        cerebellar = olive.last_metrics.get("cerebellar_loss") if olive else None
        for region in regions.values():
            m = region.last_metrics
            val = m.get(self.headline.metric)
            table.add_row(
                region.name,
                str(region.pid),
                "[green]yes[/]" if region.alive else "[red]no[/]",
                region.state,
                f"{max(region.epoch, 0)}/{self.spec.epochs}",
                _fmt(m.get("train_loss")),
                _fmt(val),
                _fmt(cerebellar if region.role != "area" else None),
                f"{self._rate(region.name, region.sent + region.received):.0f}",
                str(region.rejected),
            )
        return table


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"
