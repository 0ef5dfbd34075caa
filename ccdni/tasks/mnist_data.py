"""MNIST for the seqMNIST family: loaded once, kept in memory as tensors.

The MNIST *training* set (60 000 images) is read from ``<root>/MNIST/raw`` (torchvision's
layout: the IDX files) with numpy — the same uint8 tensors torchvision's reader gives, without
importing torchvision (seconds per process) — converted once to a float tensor in [0, 1] of
shape ``(60000, 28, 28)`` and split 48 000 train / 12 000 validation, as in the paper. The split is a
fixed permutation drawn from :data:`SPLIT_SEED`, independent of the run seed, so every run and
every process sees the same validation set. Loaded splits are cached per process, keyed on the
resolved data root; callers must treat the cached tensors as read-only.

Nothing is downloaded unless asked (``download=True``, the ``--download`` flag); missing files
raise :class:`DataMissingError`. :func:`check_mnist` only tests that the files exist: the
orchestrator calls it before it creates a run directory or starts any process, so a missing
data set is one error line, not a region dying at start-up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

N_IMAGES = 60_000  # the MNIST training set
N_TRAIN = 48_000  # as in the paper
N_VALIDATION = 12_000  # as in the paper
SPLIT_SEED = 1234  # fixed split, independent of the run seed
IMAGE_SIDE = 28
# the IDX files torchvision's MNIST expects under MNIST/raw (it checks all four)
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataMissingError(FileNotFoundError):
    """The MNIST files are not where the spec says; the message says where and what to do."""


@dataclass(frozen=True)
class MnistSplits:
    """The train/validation split of the MNIST training set (read-only, shared tensors).

    ``*_images`` are float32 in [0, 1], ``(n, 28, 28)``; ``*_labels`` are long ``(n,)``;
    ``*_index`` are the positions of the examples in the original 60 000-image set.
    """

    train_images: torch.Tensor  # (48000, 28, 28)
    train_labels: torch.Tensor  # (48000,)
    train_index: torch.Tensor  # (48000,)
    val_images: torch.Tensor  # (12000, 28, 28)
    val_labels: torch.Tensor  # (12000,)
    val_index: torch.Tensor  # (12000,)

    def subset(self, train_subset: int = 0, val_subset: int = 0) -> MnistSplits:
        """The first ``train_subset`` / ``val_subset`` examples of each split (0: all)."""
        n_train = _subset_size("train_subset", train_subset, self.train_images.shape[0])
        n_val = _subset_size("val_subset", val_subset, self.val_images.shape[0])
        return MnistSplits(
            self.train_images[:n_train],
            self.train_labels[:n_train],
            self.train_index[:n_train],
            self.val_images[:n_val],
            self.val_labels[:n_val],
            self.val_index[:n_val],
        )


def _subset_size(name: str, requested: int, available: int) -> int:
    if requested < 0 or requested > available:
        raise ValueError(f"{name}={requested} must lie in [0, {available}] (0: all)")
    return requested or available


def raw_folder(root: str | Path) -> Path:
    """Where torchvision keeps the MNIST IDX files under a data root."""
    return Path(root).expanduser().resolve() / "MNIST" / "raw"


def _missing_files(root: Path) -> list[str]:
    folder = raw_folder(root)
    return [name for name in RAW_FILES if not (folder / name).is_file()]


def _missing_message(root: Path, missing: list[str], cause: str = "") -> str:
    detail = f" ({cause})" if cause else ""
    return (
        f"MNIST not found in {raw_folder(root)}: missing {', '.join(missing) or 'files'}{detail}; "
        "pass --download to fetch it there, or point --data-dir / $CCDNI_DATA at a folder "
        "holding MNIST/raw"
    )


def check_mnist(root: str | Path, download: bool = False) -> Path:
    """Make sure the MNIST files are under ``root`` before anything starts; returns the root.

    Cheap: it only tests that the raw files exist (nothing is read). Missing files raise
    :class:`DataMissingError` with a one-line message saying where it looked and what to do,
    unless ``download`` is set, in which case torchvision fetches them now (once, in the
    caller's process, rather than later inside a region process).
    """
    resolved = Path(root).expanduser().resolve()
    missing = _missing_files(resolved)
    if missing and download:
        _download(resolved, missing)
    elif missing:
        raise DataMissingError(_missing_message(resolved, missing))
    return resolved


def _download(resolved: Path, missing: list[str]) -> None:
    from torchvision.datasets import MNIST

    try:
        MNIST(str(resolved), train=True, download=True)
    except (RuntimeError, OSError) as exc:
        cause = " ".join(str(exc).split())
        raise DataMissingError(_missing_message(resolved, missing, cause)) from exc


def load_mnist(root: str | Path, download: bool = False) -> MnistSplits:
    """The 48 000 / 12 000 split of the MNIST training set under ``root`` (cached).

    ``root`` is the data root holding ``MNIST/raw``. With ``download`` the files are fetched by
    torchvision when missing; without it a missing file raises :class:`DataMissingError`.
    """
    resolved = check_mnist(root, download)
    return _load_cached(str(resolved))


IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST uses


def read_idx(path: Path, dims: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``dims`` dimensions, as a writable uint8 array.

    The layout (big-endian): two zero bytes, the type code, the number of dimensions, one u32
    per dimension, then the data — what torchvision's ``read_sn3_pascalvincent_tensor`` reads.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataMissingError(_missing_message(path.parents[2], [path.name], str(exc))) from exc
    start = 4 + 4 * dims
    if data.size < start or data[0] or data[1] or data[2] != IDX_UBYTE or data[3] != dims:
        raise ValueError(f"{path} is not an IDX file of {dims}-d unsigned bytes")
    shape = tuple(int(d) for d in data[4:start].view(">u4"))
    body = data[start:]
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {body.size} bytes of data, its header says {shape}")
    return body.reshape(shape)


def read_training_set(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 60 000 MNIST training images (uint8, (60000, 28, 28)) and labels (int64)."""
    folder = raw_folder(root)
    images = read_idx(folder / "train-images-idx3-ubyte", 3)
    labels = read_idx(folder / "train-labels-idx1-ubyte", 1)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


@functools.lru_cache(maxsize=4)
def _load_cached(resolved_root: str) -> MnistSplits:
    root = Path(resolved_root)
    missing = _missing_files(root)
    if missing:
        raise DataMissingError(_missing_message(root, missing))
    data, targets = read_training_set(root)
    images = data.to(torch.float32).div_(255.0)  # (60000, 28, 28), in [0, 1]
    labels = targets.to(torch.long)  # (60000,)
    if images.shape != (N_IMAGES, IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(f"unexpected MNIST training images of shape {tuple(images.shape)}")
    order = torch.randperm(N_IMAGES, generator=torch.Generator().manual_seed(SPLIT_SEED))
    train_index, val_index = order[:N_TRAIN], order[N_TRAIN:]
    return MnistSplits(
        images[train_index],
        labels[train_index],
        train_index,
        images[val_index],
        labels[val_index],
        val_index,
    )


def clear_cache() -> None:
    """Forget the loaded splits (frees their memory)."""
    _load_cached.cache_clear()
