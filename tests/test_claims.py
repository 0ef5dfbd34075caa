"""The claims page: ``launch.py claims --quick`` end to end, and the verdict rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccdni.reporting.stats import paired_from_diffs
from experiments.claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    NO_CONTROL,
    NOT_TESTED,
    OPEN,
    Context,
    claim_loss_sparsity,
    combine,
    evaluate,
    render,
    sources,
    verdict_of,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CCDNI_DATA") or ROOT.parent / "shared" / "data").resolve()
NEEDED = {"1a", "1b", "2", "3", "4a", "4b", "5", "6", "7", "8", "9"}


def table_rows(text: str, header: str = "| # | paper") -> list[list[str]]:
    """The cells of the body rows of the table whose header starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("| "):
            break
        body.append([c.strip() for c in line.strip("|").split(" | ")])
    return body


@pytest.mark.skipif(not (DATA_DIR / "MNIST" / "raw").is_dir(), reason="MNIST not available")
def test_quick_claims_page_has_every_claim_with_a_verdict(tmp_path: Path) -> None:
    """``launch.py claims --quick`` runs every sweep it needs into a fresh folder and writes a
    page with one row per claim, each with a measurement, a verdict and its command."""
    doc = tmp_path / "claims.md"
    result = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "claims",
            "--quick",
            "--sweeps-root",
            str(tmp_path / "sweeps"),
            "--doc",
            str(doc),
        ],
        cwd=ROOT,
        env={**os.environ, "CCDNI_DATA": str(DATA_DIR)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = doc.read_text()
    rows = table_rows(text)
    assert {r[0] for r in rows} == {c.number for c in CLAIMS} >= NEEDED
    for number, paper, measurement, control, verdict, beyond, command in rows:
        assert verdict.strip("*") in (HOLDS, FAILS, OPEN), (number, verdict)
        assert beyond in (HOLDS, FAILS, OPEN, NO_CONTROL), (number, beyond)
        assert paper and control, number
        assert "measured" not in measurement, (number, measurement)  # no "not/could not be"
        assert f"--claim {number} --quick" in command, (number, command)
    glance = {r[0]: r[2] for r in table_rows(text, "| # | figure")}
    assert glance == {r[0]: r[4] for r in rows}
    # the DNI-vs-LSTM rows carry the zero-DNI decomposition
    assert {r[0]: r[5] for r in rows}["1a"] != NO_CONTROL
    assert (tmp_path / "sweeps" / "target-reaching" / "fig2b" / "results.csv").exists()
    assert "Budget: **quick**" in doc.read_text()


def test_verdict_rule() -> None:
    """A claim holds when the paired difference has the paper's sign with p < 0.05, does not
    hold when it has the opposite sign with p < 0.05, and is inconclusive otherwise."""
    lower = paired_from_diffs([-3.0, -2.5, -3.2, -2.9, -3.1])
    noisy = paired_from_diffs([-3.0, 2.5, -1.0, 0.5, 1.0])
    assert lower.p < 0.05 and lower.n == 5 and lower.wins == 5
    assert verdict_of(lower, -1) == HOLDS
    assert verdict_of(lower, +1) == FAILS
    assert verdict_of(noisy, -1) == OPEN
    assert verdict_of(paired_from_diffs([-3.0]), -1) == OPEN  # one seed: no test
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, OPEN]) == OPEN
    assert combine([HOLDS, FAILS]) == FAILS


def test_a_claim_without_runs_is_not_tested_here(tmp_path: Path) -> None:
    """With no sweep on disk every row is "not tested here" and the page still names each
    claim and its command; an ld-seqMNIST sweep holding only LSTM and zero-DNI runs is not
    a measurement either."""
    rows = evaluate(sweeps_root=tmp_path, report_only=True, echo=False)
    assert [r.number for r in rows] == [c.number for c in CLAIMS]
    assert {r.verdict for r in rows} == {NOT_TESTED}
    text = render(rows, False, 1.0, sources(False, tmp_path))
    assert f"0 hold, 0 do not hold, 0 inconclusive, {len(CLAIMS)} not tested here" in text
    assert all(f"--claim {r.number}`" in text for r in rows)

    class Record:
        def __init__(self, model: str) -> None:
            self.model, self.seed = model, 0
            self.spec = SimpleNamespace(model=model, gamma=8, seed=0)

        def get(self, name: str) -> object:
            return getattr(self.spec, name)

    class OnlyControls(Context):
        def runs(self, key: str, plan: str) -> list:
            return [Record("lstm"), Record("zero-dni")]

    row = [r for r in rows if r.number == "5"][0]
    claim_loss_sparsity(OnlyControls(sources(False, tmp_path), False), row)
    assert row.verdict == NOT_TESTED and row.measurement.startswith("not measured")


def test_beyond_zero_dni_separates_the_extra_steps_from_the_feedback(tmp_path: Path) -> None:
    """A DNI model that beats the LSTM only as much as zero-DNI does gets "holds" for the
    paper's statement and "inconclusive" beyond zero-DNI; one that also beats zero-DNI gets
    "holds" for both, and one worse than zero-DNI "does not hold" beyond it."""
    from experiments.claims import Row, _compare_models

    class Record:
        def __init__(self, model: str, seed: int, value: float) -> None:
            self.model, self.seed, self.value = model, seed, value
            self.spec = SimpleNamespace(model=model, seed=seed)

        def get(self, name: str) -> object:
            return getattr(self.spec, name)

        def final(self, last: int = 1) -> float:
            return self.value

    noise = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0]
    records = []
    for seed, e in enumerate(noise):
        records += [
            Record("lstm", seed, 80.0 + e),
            Record("zero-dni", seed, 70.0 + e),
            Record("cc-dni", seed, 70.0 - e),  # as good as zero-DNI, no better
            Record("scc-dni", seed, 65.0 + 0.5 * e),  # better than zero-DNI too
        ]
    ctx = Context(sources(False, tmp_path), False)
    row = Row("x", "Fig. x", "DNI beats the LSTM")
    _compare_models(ctx, row, records, lambda r: r.final(5), "final", models=("cc-dni",))
    assert (row.verdict, row.beyond) == (HOLDS, OPEN)
    assert "zero-DNI − LSTM: -10.00" in row.control
    row = Row("y", "Fig. y", "DNI beats the LSTM")
    _compare_models(ctx, row, records, lambda r: r.final(5), "final", models=("scc-dni",))
    assert (row.verdict, row.beyond) == (HOLDS, HOLDS)
    worse = [r for r in records if r.model != "cc-dni"]
    worse += [Record("cc-dni", s, 75.0 + e) for s, e in enumerate(noise)]
    row = Row("z", "Fig. z", "DNI beats the LSTM")
    _compare_models(ctx, row, worse, lambda r: r.final(5), "final", models=("cc-dni",))
    assert (row.verdict, row.beyond) == (HOLDS, FAILS)
