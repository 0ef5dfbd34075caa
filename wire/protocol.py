"""The wire protocol between regions: version, kinds, headers and codec.

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
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import msgpack
import numpy as np

from wire.ids import StepId

if TYPE_CHECKING:  # torch is imported where tensors are made: control messages need none
    import torch

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
    """Climbing-fibre error e for the prediction ``ids`` (the olive reports L_C itself)."""

    kind: ClassVar[Kind] = Kind.CLIMBING


@dataclass(frozen=True)
class ActivityHeader(StepHeader):
    kind: ClassVar[Kind] = Kind.ACTIVITY


@dataclass(frozen=True)
class FeedbackHeader(StepHeader):
    kind: ClassVar[Kind] = Kind.FEEDBACK


class RegionState(str, enum.Enum):
    """What a region is doing, as its heartbeats report it and the orchestrator records it."""

    SPAWNED = "spawned"  # started by the orchestrator, not heard from yet
    STARTING = "starting"  # building its core, restoring its checkpoint
    READY = "ready"  # reported ready, waiting for start
    TRAINING = "training"  # an area running its epochs
    SERVING = "serving"  # the cerebellum answering efferences
    COMPARING = "comparing"  # the olive pairing predictions and targets
    DONE = "done"  # an area that finished its epochs, waiting to be stopped
    STOPPED = "stopped"  # leaving its main loop
    EXITING = "exiting"  # reported that it exits
    EXITED = "exited"  # its process is gone
    LESIONED = "lesioned"  # killed (or died) and not revived


@dataclass(frozen=True)
class HeartbeatHeader(Header):
    """A region is alive: its state, epoch and message counters."""

    kind: ClassVar[Kind] = Kind.HEARTBEAT
    region: str = ""
    pid: int = 0
    state: str = RegionState.STARTING.value
    epoch: int = 0
    sent: int = 0
    received: int = 0
    rejected: int = 0
    batch: int = 0  # an area: training batches done in the current epoch
    batches: int = 0  # an area: training batches per epoch (0: not an area)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "state", RegionState(self.state).value)
        except ValueError:
            raise ProtocolError(f"unknown region state {self.state!r}") from None


@dataclass(frozen=True)
class MetricHeader(Header):
    """One record of numbers (one epoch of an area, one epoch of the olive, ...)."""

    kind: ClassVar[Kind] = Kind.METRIC
    region: str = ""
    values: dict = field(default_factory=dict)


# --- CONTROL: typed commands ---------------------------------------------------------------------


class Command(str, enum.Enum):
    """Every CONTROL command. Who sends it → who receives it, and its argument struct."""

    START = "start"  # orchestrator → region: begin (after every region is ready)
    STOP = "stop"  # orchestrator → region, client → orchestrator: staged shutdown
    READY = "ready"  # region → orchestrator: built and listening
    DONE = "done"  # area → orchestrator: every epoch trained
    FAILED = "failed"  # region → orchestrator: the error that ends it
    EXITING = "exiting"  # region → orchestrator: leaving, with its exit code
    REQUEST_ABLATION = "request_ablation"  # area → orchestrator: a scheduled lesion is due
    LESION = "lesion"  # orchestrator → regions: ``target`` is dead
    REVIVED = "revived"  # orchestrator → regions: ``target`` is back
    BARRIER = "barrier"  # area → cerebellum: answer once these errors are applied
    BARRIER_OK = "barrier_ok"  # cerebellum → area: they are
    RESTART_COUNT = "restart_count"  # chain area → cerebellum: count its errors from zero
    EPOCH_END = "epoch_end"  # area → olive: every target of the epoch has been sent
    HELLO = "hello"  # chain area k → area k+1: my connection is up
    BATCH_DONE = "batch_done"  # chain area k+1 → area k: flow control
    FEEDBACK_WITHHELD = "feedback_withheld"  # chain area k+1 → area k: no ∂L/∂ĥ this batch
    VALIDATED = "validated"  # chain area k+1 → area k: epoch validated below
    STATUS = "status"  # client → orchestrator: the region table
    ABLATE = "ablate"  # client → orchestrator: kill ``region``
    REVIVE = "revive"  # client → orchestrator: start ``region`` again
    REPLY = "reply"  # orchestrator → client: the answer to a client command


@dataclass(frozen=True)
class Arguments:
    """Base of the argument structs: frozen, typed, validated on decode."""


@dataclass(frozen=True)
class NoArguments(Arguments):
    """A command that carries nothing."""


@dataclass(frozen=True)
class ReadyArguments(Arguments):
    epoch: int = 0  # the epoch an area starts from (resume), 0 otherwise


@dataclass(frozen=True)
class DoneArguments(Arguments):
    epochs: int


@dataclass(frozen=True)
class FailedArguments(Arguments):
    error: str


@dataclass(frozen=True)
class ExitingArguments(Arguments):
    code: int


@dataclass(frozen=True)
class TargetArguments(Arguments):
    """Which region a lesion or revival notice is about."""

    target: str


@dataclass(frozen=True)
class AblationRequestArguments(Arguments):
    target: str
    epoch: int


@dataclass(frozen=True)
class BarrierArguments(Arguments):
    interface: str
    errors_expected: int


@dataclass(frozen=True)
class InterfaceArguments(Arguments):
    """Which interface's error count starts again (after a revival)."""

    interface: str


@dataclass(frozen=True)
class EpochArguments(Arguments):
    epoch: int


@dataclass(frozen=True)
class EpochEndArguments(Arguments):
    epoch: int
    interfaces: list[str] = field(default_factory=list)  # empty: the sender's own interface


@dataclass(frozen=True)
class BatchArguments(Arguments):
    epoch: int
    batch: int


@dataclass(frozen=True)
class RegionArguments(Arguments):
    """Which region a client's ablate is about."""

    region: str


@dataclass(frozen=True)
class ReviveArguments(Arguments):
    region: str
    from_checkpoint: bool = False


@dataclass(frozen=True)
class ReplyArguments(Arguments):
    ok: bool
    run: str
    regions: dict
    error: str = ""


ARGUMENTS: dict[Command, type[Arguments]] = {
    Command.START: NoArguments,
    Command.STOP: NoArguments,
    Command.READY: ReadyArguments,
    Command.DONE: DoneArguments,
    Command.FAILED: FailedArguments,
    Command.EXITING: ExitingArguments,
    Command.REQUEST_ABLATION: AblationRequestArguments,
    Command.LESION: TargetArguments,
    Command.REVIVED: TargetArguments,
    Command.BARRIER: BarrierArguments,
    Command.BARRIER_OK: NoArguments,
    Command.RESTART_COUNT: InterfaceArguments,
    Command.EPOCH_END: EpochEndArguments,
    Command.HELLO: NoArguments,
    Command.BATCH_DONE: BatchArguments,
    Command.FEEDBACK_WITHHELD: BatchArguments,
    Command.VALIDATED: EpochArguments,
    Command.STATUS: NoArguments,
    Command.ABLATE: RegionArguments,
    Command.REVIVE: ReviveArguments,
    Command.REPLY: ReplyArguments,
}


@dataclass(frozen=True)
class ControlHeader(Header):
    """A command or a report: its :class:`Command`, the sender's region, and the command's own
    frozen argument struct (``ARGUMENTS[command]``), checked here and on decode."""

    kind: ClassVar[Kind] = Kind.CONTROL
    command: Command = Command.STATUS
    region: str = ""
    args: Arguments = field(default_factory=NoArguments)

    def __post_init__(self) -> None:
        try:
            command = Command(self.command)
        except ValueError:
            raise ProtocolError(f"unknown command {self.command!r}") from None
        object.__setattr__(self, "command", command)
        expected = ARGUMENTS[command]
        if type(self.args) is not expected:
            raise ProtocolError(
                f"{command.value} takes {expected.__name__}, got {type(self.args).__name__}"
            )


def control(command: Command, sender: str, /, **args: Any) -> ControlHeader:
    """A CONTROL header for ``command`` from region ``sender`` whose arguments are ``args``
    (validated against the command's struct: ProtocolError if one is missing, extra or of the
    wrong type)."""
    return ControlHeader(command, sender, _arguments(command, args))


def _arguments(command: Command, values: Any) -> Arguments:
    """The command's argument struct from a map, or ProtocolError naming what is wrong."""
    cls = ARGUMENTS[command]
    if not isinstance(values, dict):
        raise ProtocolError(f"{command.value} arguments must be a map")
    types = _field_types(cls)
    unknown = set(values) - set(types)
    if unknown:
        raise ProtocolError(f"{command.value} has unknown arguments {sorted(map(str, unknown))}")
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = required - set(values)
    if missing:
        raise ProtocolError(f"{command.value} is missing arguments {sorted(missing)}")
    checked = {name: _typed(f"{command.value} argument", name, value, types[name])
               for name, value in values.items()}  # fmt: skip
    return cls(**checked)


def _typed(what: str, name: str, value: Any, expected: Any) -> Any:
    """``value`` if it has the declared type (an int is accepted for a float), else raise."""
    origin = typing.get_origin(expected)
    if origin is list:
        (item,) = typing.get_args(expected)
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ProtocolError(f"{what} {name!r} should be a list of {item.__name__}")
        return list(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ProtocolError(
            f"{what} {name!r} should be {expected.__name__}, got {type(value).__name__}"
        )
    return value


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

DTYPE_SIZES = {"float32": 4, "float64": 8, "float16": 2, "int64": 8, "int32": 4}  # may travel
MAX_TENSOR_BYTES = 256 * 2**20
_NUMPY_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in DTYPE_SIZES}
_FLOATS = frozenset(name for name in DTYPE_SIZES if name.startswith("float"))
_WIRE_DTYPES: dict[Any, str] = {}  # torch dtype → its wire name, filled as dtypes are met


@dataclass(frozen=True)
class Message:
    """A decoded message: its header and tensors."""

    header: Header
    tensors: tuple[torch.Tensor, ...] = ()

    @property
    def kind(self) -> Kind:
        return self.header.kind


def _field_types(cls: type[Header] | type[Arguments]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_TYPES = {cls: _field_types(cls) for cls in HEADERS.values()}
# Computed once, not per message: each kind's preamble (and the kind a preamble names), and
# the headers whose fields are flat scalars, encoded straight from their __dict__.
_PREAMBLES = {kind: MAGIC + bytes([VERSION, int(kind)]) for kind in Kind}
_KIND_OF = {preamble: kind for kind, preamble in _PREAMBLES.items()}
_FLAT_FIELDS = {
    cls: tuple(types)
    for cls, types in _TYPES.items()
    if all(t in (int, str, float) for t in types.values())
}
# The flat headers without a __post_init__ (the step headers): their defaults, so that a
# decoded header whose every field has been checked is built without the frozen dataclass's
# __init__ (one object.__setattr__ per field); the result is equal to cls(**fields).
_FAST_DEFAULTS = {
    cls: {f.name: f.default for f in dataclasses.fields(cls)}
    for cls in _FLAT_FIELDS
    if not hasattr(cls, "__post_init__")
}
_new_object = object.__new__


def _build(cls: type[Header], fields: dict[str, Any]) -> Any:
    """``cls(**fields)`` for a header of :data:`_FAST_DEFAULTS` whose fields are known to be
    its own (checked by the caller)."""
    header = _new_object(cls)
    values = header.__dict__
    values.update(_FAST_DEFAULTS[cls])
    values.update(fields)
    return header


def _wire_dtype(dtype: Any) -> str:
    """The wire name of a torch dtype, or ProtocolError if it cannot travel."""
    name = _WIRE_DTYPES.get(dtype)
    if name is None:
        name = str(dtype).removeprefix("torch.")
        if name not in DTYPE_SIZES:
            raise ProtocolError(f"dtype {dtype} cannot travel")
        _WIRE_DTYPES[dtype] = name
    return name


def encode(header: Header, tensors: typing.Sequence[torch.Tensor] = ()) -> list[Any]:
    """Frames for ``header`` and ``tensors`` (a tensor's buffer is not copied: the frame is a
    view of it, which the socket copies or, for large frames, sends from in place)."""
    cls = type(header)
    if len(tensors) != cls.n_tensors:
        raise ProtocolError(
            f"{header.kind.name} carries {header.n_tensors} tensors, got {len(tensors)}"
        )
    flat = _FLAT_FIELDS.get(cls)
    if flat is not None:  # step headers, heartbeats: no nested value to convert
        values = header.__dict__
        body = {name: values[name] for name in flat}
    else:
        body = dataclasses.asdict(header)
        if isinstance(header, ControlHeader):
            body["command"] = header.command.value
    described = []
    buffers = []
    for tensor in tensors:
        array = tensor.detach() if tensor.requires_grad else tensor
        if not array.is_cpu:
            array = array.cpu()
        name = _wire_dtype(array.dtype)
        data: Any = array.numpy()  # a view; numpy arrays export the buffer protocol
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        described.append([name, list(data.shape)])
        buffers.append(memoryview(data.reshape(-1)).cast("B"))
    body["tensors"] = described
    return [_PREAMBLES[header.kind], msgpack.packb(body, use_bin_type=True), *buffers]


def _bytes(frame: Any) -> bytes:
    return frame if type(frame) is bytes else bytes(frame)


def _preamble_error(preamble: bytes) -> ProtocolError:
    """Why a preamble that names no kind of this version is refused."""
    if len(preamble) != 4 or preamble[:2] != MAGIC:
        return ProtocolError("bad preamble (not a ccdni message)")
    if preamble[2] != VERSION:
        return ProtocolError(f"protocol version {preamble[2]} != {VERSION}")
    return ProtocolError(f"unknown message kind {preamble[3]}")


def decode(frames: typing.Sequence[Any], check_finite: bool = True) -> Message:
    """Validate and decode the frames of one message, or raise :class:`ProtocolError`.

    Tensor frames that are received ZeroMQ frames (``copy=False``: objects with a ``buffer``)
    are used in place: the tensor is a view of the frame's memory and holds a reference to
    the frame, so the frame lives as long as the tensor. Any other frame (bytes, a view of
    someone else's memory) is copied once."""
    if len(frames) < 2:
        raise ProtocolError(f"expected at least 2 frames, got {len(frames)}")
    preamble = _bytes(frames[0])
    kind = _KIND_OF.get(preamble)
    if kind is None:
        raise _preamble_error(preamble)
    cls = HEADERS[kind]
    try:
        body = msgpack.unpackb(_bytes(frames[1]), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"header is not msgpack: {type(exc).__name__}") from None
    if type(body) is not dict:
        raise ProtocolError("header is not a map")
    described = body.pop("tensors", [])
    types = _TYPES[cls]
    if not body.keys() <= types.keys():
        unknown = set(body) - set(types)
        raise ProtocolError(f"{kind.name} header has unknown fields {sorted(map(repr, unknown))}")
    if cls is ControlHeader:
        try:
            command = Command(body.get("command"))
        except ValueError:
            raise ProtocolError(f"unknown command {body.get('command')!r}") from None
        body["command"] = command
        body["region"] = _typed("CONTROL header", "region", body.get("region", ""), str)
        body["args"] = _arguments(command, body.get("args", {}))
    else:
        for name, value in body.items():
            expected = types[name]
            if type(value) is not expected:  # the exact type passes at once; else check it
                body[name] = _typed(f"{kind.name} header field", name, value, expected)
    header = _build(cls, body) if cls in _FAST_DEFAULTS else cls(**body)
    n_tensors = cls.n_tensors
    if not isinstance(described, list) or len(described) != n_tensors:
        raise ProtocolError(f"{kind.name} must describe {n_tensors} tensors")
    if len(frames) != 2 + n_tensors:
        raise ProtocolError(f"{kind.name} needs {2 + n_tensors} frames, got {len(frames)}")
    if not n_tensors:
        return Message(header)
    if n_tensors == 1:  # every step message: no generator, no frozen __init__
        message = _new_object(Message)
        message.__dict__.update(
            header=header, tensors=(_tensor(described[0], frames[2], check_finite),)
        )
        return message
    tensors = tuple(_tensor(d, frames[2 + i], check_finite) for i, d in enumerate(described))
    return Message(header, tensors)


def _tensor(description: Any, frame: Any, check_finite: bool) -> torch.Tensor:
    if not (isinstance(description, list) and len(description) == 2):
        raise ProtocolError("tensor description must be [dtype, shape]")
    dtype_name, shape = description
    if type(dtype_name) is not str or dtype_name not in DTYPE_SIZES:
        raise ProtocolError(f"unsupported dtype {dtype_name!r}")
    if type(shape) is not list or len(shape) > 8:
        raise ProtocolError(f"bad tensor shape {shape!r}")
    count = 1
    for d in shape:
        if type(d) is not int or d < 0:  # msgpack gives exact ints: a bool is refused here
            raise ProtocolError(f"bad tensor shape {shape!r}")
        count *= d
    owned = getattr(frame, "buffer", None)  # a received zmq.Frame: its memory is ours
    buffer = memoryview(frame if owned is None else owned).cast("B")
    expected = count * DTYPE_SIZES[dtype_name]
    if expected > MAX_TENSOR_BYTES or buffer.nbytes != expected:
        raise ProtocolError(
            f"tensor buffer has {buffer.nbytes} bytes, shape {shape} of {dtype_name} needs "
            f"{expected}"
        )
    array = np.frombuffer(buffer, dtype=_NUMPY_DTYPES[dtype_name])
    if owned is None or not array.flags.writeable:
        array = array.copy()  # not a frame we own: never alias the sender's memory
    if check_finite and dtype_name in _FLOATS and count and not np.isfinite(array).all():
        raise ProtocolError("tensor holds NaN or Inf")
    return _from_numpy(array.reshape(shape))


_TORCH_FROM_NUMPY: Any = None  # torch.from_numpy, once torch is imported here


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy``, torch imported on first use (control messages need none)."""
    global _TORCH_FROM_NUMPY
    if _TORCH_FROM_NUMPY is None:
        import torch

        _TORCH_FROM_NUMPY = torch.from_numpy
    return _TORCH_FROM_NUMPY(array)


def expect_shape(
    message: Message, shape: tuple[int | None, ...], dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The message's single tensor if it has ``dtype`` (default float32) and ``shape`` (None:
    any size)."""
    (tensor,) = message.tensors
    if dtype is None:
        import torch

        dtype = torch.float32
    if tensor.dtype != dtype:
        raise ProtocolError(f"{message.kind.name} tensor is {tensor.dtype}, expected {dtype}")
    got = tensor.shape
    wrong = len(got) != len(shape)
    if not wrong:
        for size, want in zip(got, shape):
            if want is not None and size != want:
                wrong = True
                break
    if wrong:
        raise ProtocolError(
            f"{message.kind.name} tensor has shape {tuple(got)}, expected "
            f"{tuple('*' if s is None else s for s in shape)}"
        )
    if got and got[0] == 0:
        raise ProtocolError(f"{message.kind.name} tensor is empty")
    return tensor


def step_header(cls: type[StepHeader], run: str, interface: str, ids: StepId, **extra: Any):
    """A step header for ``ids``."""
    epoch, batch, truncation = ids
    if cls in _FAST_DEFAULTS and extra.keys() <= _FAST_DEFAULTS[cls].keys():
        fields = {"run": run, "interface": interface, "epoch": epoch, "batch": batch}
        fields["truncation"] = truncation
        if extra:
            fields.update(extra)
        return _build(cls, fields)
    return cls(run=run, interface=interface, epoch=epoch, batch=batch, truncation=truncation,
               **extra)  # fmt: skip
