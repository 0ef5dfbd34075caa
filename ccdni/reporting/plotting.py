"""matplotlib with the file-only Agg backend (no display needed): ``from ... import plt``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: figures are written to files, never shown
import matplotlib.pyplot as plt  # noqa: E402 - must follow matplotlib.use

__all__ = ["plt"]
