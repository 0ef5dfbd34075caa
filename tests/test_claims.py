"""The claims page: ``launch.py claims --quick`` end to end, and the verdict rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ccdni.reporting.stats import paired_from_diffs
from experiments.claims import CLAIMS, FAILS, HOLDS, OPEN, combine, verdict_of

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CCDNI_DATA") or ROOT.parent / "shared" / "data").resolve()
NEEDED = {"1a", "1b", "2", "3", "4a", "4b", "5", "6", "7", "8", "9"}


def table_rows(text: str) -> list[list[str]]:
    """The cells of the claims table's body rows."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header, *body = lines
    assert header.startswith("| # | paper")
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in body]


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
    rows = table_rows(doc.read_text())
    assert {r[0] for r in rows} == {c.number for c in CLAIMS} >= NEEDED
    for number, paper, measurement, control, verdict, command in rows:
        assert verdict.strip("*") in (HOLDS, FAILS, OPEN), (number, verdict)
        assert paper and control, number
        assert "measured" not in measurement, (number, measurement)  # no "not/could not be"
        assert f"--claim {number} --quick" in command, (number, command)
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
