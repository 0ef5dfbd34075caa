"""Shared test set-up: the MNIST folder defaults to ../shared/data beside the repository (as in
CI), unless CCDNI_DATA says otherwise; nothing is ever downloaded in tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CCDNI_DATA", str(ROOT.parent / "shared" / "data"))
torch.set_num_threads(1)  # two cores are shared by every region and the test process
