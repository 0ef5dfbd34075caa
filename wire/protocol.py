"""The wire protocol between regions: version, kinds, headers and codec (DESIGN §4).

A message is one ZeroMQ multipart message::

    ┌──────────────────────────────┐
    │ [identity]                   │  only on ROUTER sockets; added and stripped by ZeroMQ
    ├──────────────────────────────┤
    │ frame 0: preamble, 4 bytes   │  b"CD" magic · version (u8) · kind (u8)
    ├──────────────────────────────┤
    │ frame 1: header, msgpack map │  the kind's typed header fields, plus
    │                              │  "tensors": [[dtype, [d0, d1, ...]], ...]
    ├──────────────────────────────┤
    │ frame 2..: tensor buffers    │  one raw C-contiguous little-endian buffer per tensor,
    │                              │  described by the header's "tensors" list in order
    └──────────────────────────────┘

Nothing is ever pickled. :func:`decode` validates the preamble (magic, version, kind), the
header (a map whose fields have the declared types), the frame count, each tensor's dtype,
shape and byte size, and finiteness; any failure raises :class:`ProtocolError` with the reason.
Receivers check shapes against what they expect with :func:`expect_shape`, log the reason and
drop the message: a bad message never kills a region and never reaches learning.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import numpy as np
import torch

from wire.ids import StepId

MAGIC = b"CD"
VERSION = 1


class Kind(enum.IntEnum):
    """One byte naming what a message is."""

    EFFERENCE = 1  # area → cerebellum: the state s_b
    PREDICTION = 2  # cerebellum → area and → olive: ĝ_b
    TARGET = 3  # area → olive: g̃_a, the feedback that really arrived
    CLIMBING = 4  # olive → cerebellum: climbing-fibre error e
    ACTIVITY = 5  # area k → area k+1 (chains): h_k
    FEEDBACK = 6  # area k+1 → area k (chains): ∂L/∂h_k
    HEARTBEAT = 7  # any region → orchestrator (and olive → cerebellum): alive
    METRIC = 8  # any region → orchestrator: numbers of one unit of work
    CONTROL = 9  # orchestrator ↔ region: start, stop, done, failed, ...


class ProtocolError(ValueError):
    """A message that breaks the protocol; the text says why."""


@dataclass(frozen=True)
class Header:
    """Base of every header; subclasses declare their kind and fields."""

    kind: ClassVar[Kind]
    n_tensors: ClassVar[int] = 0


@dataclass(frozen=True)
class StepHeader(Header):
    """Headers of the messages that carry one tensor for one truncation boundary."""

    n_tensors: ClassVar[int] = 1
    run: str = ""
    interface: str = ""
    epoch: int = 0
    batch: int = 0
    truncation: int = 0

    @property
    def ids(self) -> StepId:
        return StepId(self.epoch, self.batch, self.truncation)


@dataclass(frozen=True)
class EfferenceHeader(StepHeader):
    """Efference copy s_b. ``errors_expected``: under lockstep, how many climbing-fibre
    errors for this interface the cerebellum must have applied before answering."""

    kind: ClassVar[Kind] = Kind.EFFERENCE
    errors_expected: int = 0


@dataclass(frozen=True)
class PredictionHeader(StepHeader):
    kind: ClassVar[Kind] = Kind.PREDICTION


@dataclass(frozen=True)
class TargetHeader(StepHeader):
    kind: ClassVar[Kind] = Kind.TARGET


@dataclass(frozen=True)
class ClimbingHeader(StepHeader):
    """Climbing-fibre error e for the prediction ``ids``, with the cerebellar loss L_C."""

    kind: ClassVar[Kind] = Kind.CLIMBING
    loss: float = 0.0


@dataclass(frozen=True)
class ActivityHeader(StepHeader):
    kind: ClassVar[Kind] = Kind.ACTIVITY


@dataclass(frozen=True)
class FeedbackHeader(StepHeader):
    kind: ClassVar[Kind] = Kind.FEEDBACK


@dataclass(frozen=True)
class HeartbeatHeader(Header):
    """A region is alive: its state, epoch and message counters."""

    kind: ClassVar[Kind] = Kind.HEARTBEAT
    region: str = ""
    pid: int = 0
    state: str = ""
    epoch: int = 0
    sent: int = 0
    received: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class MetricHeader(Header):
    """One record of numbers (one epoch of an area, one epoch of the olive, ...)."""

    kind: ClassVar[Kind] = Kind.METRIC
    region: str = ""
    values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ControlHeader(Header):
    """A command or a report: start, stop, done, failed, ablate, status, ..."""

    kind: ClassVar[Kind] = Kind.CONTROL
    command: str = ""
    region: str = ""
    args: dict = field(default_factory=dict)


HEADERS: dict[Kind, type[Header]] = {
    cls.kind: cls
    for cls in (
        EfferenceHeader,
        PredictionHeader,
        TargetHeader,
        ClimbingHeader,
        ActivityHeader,
        FeedbackHeader,
        HeartbeatHeader,
        MetricHeader,
        ControlHeader,
    )
}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "int64": torch.int64,
    "int32": torch.int32,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_TENSOR_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Message:
    """A decoded message: its header and tensors."""

    header: Header
    tensors: tuple[torch.Tensor, ...] = ()

    @property
    def kind(self) -> Kind:
        return self.header.kind


def _field_types(cls: type[Header]) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_TYPES = {cls: _field_types(cls) for cls in HEADERS.values()}


def encode(header: Header, tensors: typing.Sequence[torch.Tensor] = ()) -> list[Any]:
    """Frames for ``header`` and ``tensors`` (buffers are not copied where avoidable)."""
    if len(tensors) != header.n_tensors:
        raise ProtocolError(
            f"{header.kind.name} carries {header.n_tensors} tensors, got {len(tensors)}"
        )
    body = dataclasses.asdict(header)
    described = []
    buffers = []
    for tensor in tensors:
        array = tensor.detach().to("cpu").contiguous()
        if array.dtype not in DTYPE_NAMES:
            raise ProtocolError(f"dtype {array.dtype} cannot travel")
        described.append([DTYPE_NAMES[array.dtype], list(array.shape)])
        buffers.append(memoryview(array.reshape(-1).numpy()).cast("B"))
    body["tensors"] = described
    preamble = MAGIC + bytes([VERSION, int(header.kind)])
    return [preamble, msgpack.packb(body, use_bin_type=True), *buffers]


def decode(frames: typing.Sequence[Any], check_finite: bool = True) -> Message:
    """Validate and decode the frames of one message, or raise :class:`ProtocolError`."""
    if len(frames) < 2:
        raise ProtocolError(f"expected at least 2 frames, got {len(frames)}")
    preamble = bytes(frames[0])
    if len(preamble) != 4 or preamble[:2] != MAGIC:
        raise ProtocolError("bad preamble (not a ccdni message)")
    if preamble[2] != VERSION:
        raise ProtocolError(f"protocol version {preamble[2]} != {VERSION}")
    try:
        kind = Kind(preamble[3])
    except ValueError:
        raise ProtocolError(f"unknown message kind {preamble[3]}") from None
    cls = HEADERS[kind]
    try:
        body = msgpack.unpackb(bytes(frames[1]), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"header is not msgpack: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise ProtocolError("header is not a map")
    described = body.pop("tensors", [])
    types = _TYPES[cls]
    unknown = set(body) - set(types)
    if unknown:
        raise ProtocolError(f"{kind.name} header has unknown fields {sorted(map(repr, unknown))}")
    for name, value in body.items():
        expected = types[name]
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            body[name] = float(value)
            ok = True
        if not ok:
            raise ProtocolError(
                f"{kind.name} header field {name!r} should be {expected.__name__}, "
                f"got {type(value).__name__}"
            )
    header = cls(**body)
    if not isinstance(described, list) or len(described) != cls.n_tensors:
        raise ProtocolError(f"{kind.name} must describe {cls.n_tensors} tensors")
    if len(frames) != 2 + cls.n_tensors:
        raise ProtocolError(f"{kind.name} needs {2 + cls.n_tensors} frames, got {len(frames)}")
    tensors = tuple(_tensor(d, frames[2 + i], check_finite) for i, d in enumerate(described))
    return Message(header, tensors)


def _tensor(description: Any, frame: Any, check_finite: bool) -> torch.Tensor:
    if not (isinstance(description, list) and len(description) == 2):
        raise ProtocolError("tensor description must be [dtype, shape]")
    dtype_name, shape = description
    if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
        raise ProtocolError(f"unsupported dtype {dtype_name!r}")
    if not (
        isinstance(shape, list)
        and len(shape) <= 8
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ProtocolError(f"bad tensor shape {shape!r}")
    dtype = DTYPES[dtype_name]
    buffer = memoryview(frame.buffer if hasattr(frame, "buffer") else frame).cast("B")
    expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if expected > MAX_TENSOR_BYTES or buffer.nbytes != expected:
        raise ProtocolError(
            f"tensor buffer has {buffer.nbytes} bytes, shape {shape} of {dtype_name} needs "
            f"{expected}"
        )
    array = np.frombuffer(buffer, dtype=np.dtype(dtype_name).newbyteorder("<")).reshape(shape)
    tensor = torch.from_numpy(array.copy())
    if check_finite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ProtocolError("tensor holds NaN or Inf")
    return tensor


def expect_shape(
    message: Message, shape: tuple[int | None, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The message's single tensor if it has ``dtype`` and ``shape`` (None: any size)."""
    (tensor,) = message.tensors
    if tensor.dtype != dtype:
        raise ProtocolError(f"{message.kind.name} tensor is {tensor.dtype}, expected {dtype}")
    if tensor.dim() != len(shape) or any(
        want is not None and got != want for got, want in zip(tensor.shape, shape)
    ):
        raise ProtocolError(
            f"{message.kind.name} tensor has shape {tuple(tensor.shape)}, expected "
            f"{tuple('*' if s is None else s for s in shape)}"
        )
    if tensor.dim() and tensor.shape[0] == 0:
        raise ProtocolError(f"{message.kind.name} tensor is empty")
    return tensor


def step_header(cls: type[StepHeader], run: str, interface: str, ids: StepId, **extra: Any):
    """A step header for ``ids``."""
    return cls(run=run, interface=interface, epoch=ids[0], batch=ids[1], truncation=ids[2], **extra)
