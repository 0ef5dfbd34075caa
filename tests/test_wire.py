"""The wire protocol: a round trip per kind, every class of invalid message, and sockets (§4)."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import pytest
import torch
import zmq

from wire.channel import Counters, Endpoint, make_socket
from wire.ids import StepId
from wire.protocol import (
    HEADERS,
    MAGIC,
    VERSION,
    ActivityHeader,
    ClimbingHeader,
    Command,
    EfferenceHeader,
    FeedbackHeader,
    HeartbeatHeader,
    Kind,
    Message,
    MetricHeader,
    PredictionHeader,
    ProtocolError,
    TargetHeader,
    control,
    decode,
    encode,
    expect_shape,
    step_header,
)

pytestmark = pytest.mark.timeout(30)

SAMPLES = {  # every field differs from its default
    Kind.EFFERENCE: EfferenceHeader(
        run="run-7", interface="area3", epoch=12, batch=3, truncation=4, errors_expected=17
    ),
    Kind.PREDICTION: PredictionHeader(run="r", interface="a1", epoch=2, batch=9, truncation=1),
    Kind.TARGET: TargetHeader(run="r2", interface="a2", epoch=300, batch=1, truncation=7),
    Kind.CLIMBING: ClimbingHeader(run="r3", interface="a3", epoch=5, batch=4, truncation=2),
    Kind.ACTIVITY: ActivityHeader(run="r4", interface="a4", epoch=1, batch=2, truncation=3),
    Kind.FEEDBACK: FeedbackHeader(run="é-ü", interface="a5", epoch=6, batch=7, truncation=8),
    Kind.HEARTBEAT: HeartbeatHeader(
        region="area0",
        pid=4242,
        state="training",
        epoch=9,
        sent=100,
        received=99,
        rejected=2,
        batch=120,
        batches=480,
    ),
    Kind.METRIC: MetricHeader(
        region="area0",
        values={"train_loss": 1.5, "epoch": 3, "name": "x", "nested": {"a": [1, 2.5, None]}},
    ),
    Kind.CONTROL: control(Command.REVIVE, "client-7", region="olive", from_checkpoint=True),
}

TENSORS = {
    "float32-2d": torch.tensor([[1.5, -0.0, 3.0e-39], [3.4e38, -2.0, 1.0 / 3.0]]),
    "float64-1d": torch.tensor([1.0 / 3.0, -1e-310, 2.0**-1074, 1e308], dtype=torch.float64),
    "int64-3d": torch.arange(-12, 12, dtype=torch.int64).reshape(2, 3, 4) * (2**40 + 1),
    "float32-empty": torch.zeros(0),
    "float16": torch.tensor([0.5, -65504.0], dtype=torch.float16),
    "int32": torch.tensor([[-(2**31), 2**31 - 1]], dtype=torch.int32),
    "float32-3d-transposed": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).transpose(0, 2),
    "float32-scalar": torch.tensor(2.5),
}


def raw(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().numpy().tobytes()


def wire(frames) -> list[bytes]:
    """What a socket would hand over: plain bytes frames."""
    return [bytes(f) for f in frames]


def valid_frames(kind: Kind = Kind.EFFERENCE) -> list[bytes]:
    header = SAMPLES[kind]
    tensors = [torch.ones(2, 4)] * header.n_tensors
    return wire(encode(header, tensors))


def with_body(frames: list[bytes], **changes) -> list[bytes]:
    body = msgpack.unpackb(frames[1], raw=False)
    body.update(changes)
    return [frames[0], msgpack.packb(body, use_bin_type=True), *frames[2:]]


# --- 1. round trips ---------------------------------------------------------------------------


def test_samples_cover_every_kind_with_non_default_values() -> None:
    assert set(SAMPLES) == set(Kind) == set(HEADERS)
    for kind, header in SAMPLES.items():
        assert type(header) is HEADERS[kind] and header.kind == kind
        for f in dataclasses.fields(header):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert getattr(header, f.name) != default, (kind, f.name)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
@pytest.mark.parametrize("name", list(TENSORS))
def test_round_trip(kind: Kind, name: str) -> None:
    header = SAMPLES[kind]
    tensors = [TENSORS[name]] * header.n_tensors
    frames = encode(header, tensors)
    assert bytes(frames[0]) == MAGIC + bytes([VERSION, int(kind)])
    assert len(frames) == 2 + header.n_tensors
    for decoded in (decode(frames), decode(wire(frames))):
        assert isinstance(decoded, Message)
        assert decoded.kind == kind
        assert type(decoded.header) is type(header)
        assert decoded.header == header
        assert len(decoded.tensors) == header.n_tensors
        for got, want in zip(decoded.tensors, tensors):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert raw(got) == raw(want), "bitwise equal"


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (2, 0, 5)])
def test_round_trip_empty_multidimensional(shape: tuple[int, ...]) -> None:
    """An empty batch (0, 2H) must encode (and then be refused by expect_shape, not encode)."""
    tensor = torch.zeros(shape)
    (got,) = decode(wire(encode(SAMPLES[Kind.TARGET], [tensor]))).tensors
    assert got.shape == shape and got.dtype == torch.float32


def test_step_header_and_ids() -> None:
    header = step_header(EfferenceHeader, "run", "area0", StepId(4, 5, 6), errors_expected=3)
    assert header.ids == StepId(4, 5, 6) and header.errors_expected == 3
    assert decode(encode(header, [torch.ones(1, 2)])).header.ids == StepId(4, 5, 6)


def test_removed_field_is_refused() -> None:
    """CLIMBING no longer carries the loss (no receiver read it): a message with it is refused."""
    frames = with_body(valid_frames(Kind.CLIMBING), loss=2.0)
    with pytest.raises(ProtocolError, match="unknown fields"):
        decode(frames)


def test_encode_refuses_what_cannot_travel() -> None:
    with pytest.raises(ProtocolError, match="carries 1 tensors, got 0"):
        encode(SAMPLES[Kind.TARGET], [])
    with pytest.raises(ProtocolError, match="carries 0 tensors, got 1"):
        encode(SAMPLES[Kind.HEARTBEAT], [torch.ones(1)])
    with pytest.raises(ProtocolError, match="cannot travel"):
        encode(SAMPLES[Kind.TARGET], [torch.ones(2, dtype=torch.bfloat16)])


# --- 2. invalid messages ----------------------------------------------------------------------


def _frames_with_tensor_frame(frame: bytes, description) -> list[bytes]:
    frames = valid_frames()
    return with_body(frames, tensors=description)[:2] + [frame]


INVALID = {
    "garbage-one-frame": ([b"\x00\xffgarbage\x13"], "at least 2 frames"),
    "garbage-two-frames": ([b"\x9a\x00\x13\x77\x01", b"\xde\xad\xbe\xef"], "bad preamble"),
    "one-frame": (valid_frames()[:1], "at least 2 frames"),
    "no-frames": ([], "at least 2 frames"),
    "empty-preamble": ([b"", *valid_frames()[1:]], "bad preamble"),
    "short-preamble": ([MAGIC + bytes([VERSION]), *valid_frames()[1:]], "bad preamble"),
    "bad-magic": ([b"XY" + bytes([VERSION, 1]), *valid_frames()[1:]], "bad preamble"),
    "wrong-version": ([MAGIC + bytes([VERSION + 1, 1]), *valid_frames()[1:]], "version 2"),
    "version-zero": ([MAGIC + bytes([0, 1]), *valid_frames()[1:]], "version 0"),
    "unknown-kind": ([MAGIC + bytes([VERSION, 99]), *valid_frames()[1:]], "unknown .*kind 99"),
    "kind-zero": ([MAGIC + bytes([VERSION, 0]), *valid_frames()[1:]], "unknown .*kind 0"),
    "header-not-msgpack": ([valid_frames()[0], b"\xc1\xc1", valid_frames()[2]], "not msgpack"),
    "header-truncated": (
        [valid_frames()[0], valid_frames()[1][:-3], valid_frames()[2]],
        "not msgpack",
    ),
    "header-trailing-bytes": (
        [valid_frames()[0], valid_frames()[1] + b"\x01", valid_frames()[2]],
        "not msgpack",
    ),
    "header-not-map": (
        [valid_frames()[0], msgpack.packb([1, 2, 3]), valid_frames()[2]],
        "not a map",
    ),
    "header-int-keys": (
        [valid_frames()[0], msgpack.packb({1: 2}), valid_frames()[2]],
        "not msgpack",
    ),
    "unknown-field": (with_body(valid_frames(), colour="red"), "unknown fields .*colour"),
    "class-var-field": (with_body(valid_frames(), kind=1), "unknown fields .*kind"),
    "epoch-str": (with_body(valid_frames(), epoch="x"), "'epoch' should be int, got str"),
    "epoch-bool": (with_body(valid_frames(), epoch=True), "'epoch' should be int, got bool"),
    "epoch-float": (with_body(valid_frames(), epoch=1.5), "'epoch' should be int, got float"),
    "run-int": (with_body(valid_frames(), run=3), "'run' should be str, got int"),
    "pid-str": (with_body(valid_frames(Kind.HEARTBEAT), pid="42"), "'pid' should be int"),
    "sent-bool": (with_body(valid_frames(Kind.HEARTBEAT), sent=False), "should be int, got bool"),
    "state-unknown": (with_body(valid_frames(Kind.HEARTBEAT), state="x"), "unknown region state"),
    "values-list": (
        with_body(valid_frames(Kind.METRIC), values=[1, 2]),
        "'values' should be dict",
    ),
    "missing-tensor-frame": (valid_frames()[:2], "needs 3 frames, got 2"),
    "extra-frame": ([*valid_frames(), b"\x00" * 32], "needs 3 frames, got 4"),
    "heartbeat-extra-frame": ([*valid_frames(Kind.HEARTBEAT), b""], "needs 2 frames, got 3"),
    "tensors-not-list": (with_body(valid_frames(), tensors="float32"), "describe 1 tensors"),
    "tensors-missing": (with_body(valid_frames(), tensors=[]), "describe 1 tensors"),
    "tensors-too-many": (
        with_body(valid_frames(), tensors=[["float32", [2, 4]]] * 2),
        "describe 1 tensors",
    ),
    "description-one-item": (
        with_body(valid_frames(), tensors=[["float32"]]),
        r"\[dtype, shape\]",
    ),
    "description-not-list": (
        with_body(valid_frames(), tensors=["float32"]),
        r"\[dtype, shape\]",
    ),
    "shape-not-list": (
        with_body(valid_frames(), tensors=[["float32", 8]]),
        "bad tensor shape",
    ),
    "shape-float": (
        with_body(valid_frames(), tensors=[["float32", [2.0, 4]]]),
        "bad tensor shape",
    ),
    "shape-bool": (
        with_body(valid_frames(), tensors=[["float32", [True, 8]]]),
        "bad tensor shape",
    ),
    "shape-too-many-dims": (
        with_body(valid_frames(), tensors=[["float32", [1] * 9]]),
        "bad tensor shape",
    ),
    "unsupported-dtype": (
        with_body(valid_frames(), tensors=[["complex64", [2, 2]]]),
        "unsupported dtype 'complex64'",
    ),
    "dtype-object": (
        with_body(valid_frames(), tensors=[["object", [2, 4]]]),
        "unsupported dtype 'object'",
    ),
    "negative-shape": (
        _frames_with_tensor_frame(b"", [["float32", [-2, 4]]]),
        "bad tensor shape",
    ),
    "buffer-too-short": (
        _frames_with_tensor_frame(b"\x00" * 31, [["float32", [2, 4]]]),
        "31 bytes",
    ),
    "buffer-too-long": (
        _frames_with_tensor_frame(b"\x00" * 33, [["float32", [2, 4]]]),
        "33 bytes",
    ),
    "buffer-dtype-mismatch": (
        _frames_with_tensor_frame(raw(torch.ones(2, 4)), [["float64", [2, 4]]]),
        "needs 64",
    ),
    "shape-huge": (
        _frames_with_tensor_frame(b"\x00" * 8, [["float32", [2**40, 2**40]]]),
        "bytes",
    ),
    "nan": (
        _frames_with_tensor_frame(raw(torch.tensor([1.0, float("nan")])), [["float32", [2]]]),
        "NaN",
    ),
    "inf": (
        _frames_with_tensor_frame(raw(torch.tensor([float("inf"), 1.0])), [["float32", [2]]]),
        "Inf",
    ),
    "minus-inf-float64": (
        _frames_with_tensor_frame(
            raw(torch.tensor([-float("inf")], dtype=torch.float64)), [["float64", [1]]]
        ),
        "Inf",
    ),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_message_is_a_protocol_error(name: str) -> None:
    frames, match = INVALID[name]
    with pytest.raises(ProtocolError, match=match):
        decode(frames)


def test_finiteness_check_can_be_turned_off() -> None:
    frames, _ = INVALID["nan"]
    (tensor,) = decode(frames, check_finite=False).tensors
    assert bool(tensor.isnan()[1])


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([3.4e38, 3.4e38, -1.0], torch.float32), ([65504.0, 65504.0], torch.float16)],
)
def test_large_finite_values_are_accepted(values, dtype) -> None:
    """Finite values near the dtype's largest (whose sum would overflow) decode unchanged."""
    tensor = torch.tensor(values, dtype=dtype)
    (got,) = decode(wire(encode(SAMPLES[Kind.TARGET], [tensor]))).tensors
    assert raw(got) == raw(tensor)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "both"])
@pytest.mark.parametrize("where", [0, 517, 999])
def test_one_non_finite_value_anywhere_is_refused(bad, where: int) -> None:
    """A single NaN, +Inf or -Inf (or +Inf and -Inf together) anywhere in a (50, 20) tensor
    is refused."""
    tensor = torch.randn(50, 20)
    if bad == "both":
        tensor.view(-1)[where] = float("inf")
        tensor.view(-1)[(where + 1) % 1000] = -float("inf")
    else:
        tensor.view(-1)[where] = bad
    with pytest.raises(ProtocolError, match="NaN or Inf"):
        decode(wire(encode(SAMPLES[Kind.EFFERENCE], [tensor])))


def test_step_headers_built_fast_equal_the_constructors() -> None:
    """Step headers from ``step_header`` and from ``decode`` (built without the dataclass
    __init__) equal, hash like and are as frozen as the constructor's, and an unknown field
    is still refused."""
    ids = StepId(4, 5, 6)
    for cls in (EfferenceHeader, PredictionHeader, ClimbingHeader, TargetHeader):
        made = cls(run="run", interface="area0", epoch=4, batch=5, truncation=6)
        fast = step_header(cls, "run", "area0", ids)
        decoded = decode(wire(encode(fast, [torch.ones(1, 2)]))).header
        for header in (fast, decoded):
            assert type(header) is cls and header == made and hash(header) == hash(made)
            assert dataclasses.asdict(header) == dataclasses.asdict(made)
            with pytest.raises(dataclasses.FrozenInstanceError):
                header.batch = 9  # type: ignore[misc]
    with_extra = step_header(EfferenceHeader, "run", "area0", ids, errors_expected=3)
    assert with_extra == EfferenceHeader("run", "area0", 4, 5, 6, errors_expected=3)
    with pytest.raises(TypeError):
        step_header(PredictionHeader, "run", "area0", ids, errors_expected=3)


def test_a_tensor_that_requires_grad_travels_as_its_values() -> None:
    """encode sends a tensor that requires grad (detached) with its values, bitwise."""
    tensor = torch.randn(3, 4, requires_grad=True) * 2.0
    (got,) = decode(wire(encode(SAMPLES[Kind.TARGET], [tensor]))).tensors
    assert not got.requires_grad and raw(got) == raw(tensor.detach())


# Malformed headers whose *values* have unexpected msgpack types: decode must answer with a
# ProtocolError (which receivers catch), never another exception (which kills the receiver).
MALFORMED = {
    "unknown-fields-str-and-bytes-keys": {"colour": 1, b"shade": 2},
    "dtype-is-a-list": {"tensors": [[["float32"], [2, 4]]]},
    "dtype-is-a-map": {"tensors": [[{"float32": 1}, [2, 4]]]},
}


def malformed_frames(changes: dict) -> list[bytes]:
    base = valid_frames()
    body = msgpack.unpackb(base[1], raw=False)
    body.update(changes)
    return [base[0], msgpack.packb(body, use_bin_type=True), base[2]]


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_header_values_are_protocol_errors(name: str) -> None:
    with pytest.raises(ProtocolError):
        decode(malformed_frames(MALFORMED[name]))


def test_header_fuzz_raises_only_protocol_errors() -> None:
    """Random msgpack values in every header slot: decode succeeds or raises ProtocolError."""
    rng = random.Random(0)
    atoms = [None, True, 0, -1, 2**63, 1.5, float("nan"), "", "float32", b"\x00", [], {}, [[1]]]

    def value(depth: int = 0):
        if depth < 2 and rng.random() < 0.3:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        if depth < 2 and rng.random() < 0.2:
            return {rng.choice(["a", "float32", "epoch"]): value(depth + 1)}
        return rng.choice(atoms)

    base = valid_frames()
    keys = ["run", "interface", "epoch", "batch", "truncation", "errors_expected", "tensors"]
    other = []
    for _ in range(300):
        body = msgpack.unpackb(base[1], raw=False)
        for key in rng.sample(keys, rng.randint(1, 3)):
            body[key] = value()
        if rng.random() < 0.3:
            body["tensors"] = [[value(), value()]]
        frames = [base[0], msgpack.packb(body, use_bin_type=True), base[2]]
        try:
            decode(frames)
        except ProtocolError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point is to catch everything else
            other.append(f"{body!r}: {type(exc).__name__}: {exc}")
    assert not other, f"{len(other)} non-ProtocolError failures, e.g. {other[:3]}"


def make_step(shape, dtype=torch.float32) -> Message:
    return Message(SAMPLES[Kind.EFFERENCE], (torch.zeros(shape, dtype=dtype),))


def test_expect_shape() -> None:
    tensor = expect_shape(make_step((3, 8)), (None, 8))
    assert tensor.shape == (3, 8)
    assert expect_shape(make_step((3, 8)), (3, 8)).shape == (3, 8)
    with pytest.raises(ProtocolError, match="float64, expected torch.float32"):
        expect_shape(make_step((3, 8), torch.float64), (None, 8))
    with pytest.raises(ProtocolError, match=r"shape \(3, 7\), expected \('\*', 8\)"):
        expect_shape(make_step((3, 7)), (None, 8))
    with pytest.raises(ProtocolError, match="shape"):
        expect_shape(make_step((3, 8, 1)), (None, 8))
    with pytest.raises(ProtocolError, match="shape"):
        expect_shape(make_step((24,)), (None, 8))
    with pytest.raises(ProtocolError, match="shape"):
        expect_shape(make_step((2, 8)), (3, 8))
    with pytest.raises(ProtocolError, match="empty"):
        expect_shape(make_step((0, 8)), (None, 8))
    assert expect_shape(make_step((2,), torch.int64), (2,), torch.int64).dtype == torch.int64


# --- 3. sockets -------------------------------------------------------------------------------


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def _record(self, event: str, **fields) -> None:
        self.events.append((event, fields))

    debug = info = warning = error = _record


@pytest.fixture
def pair(tmp_path):
    """(router Endpoint, dealer Endpoint 'area0', context) over ipc:// in tmp_path."""
    context = zmq.Context()
    sockets = []
    try:
        router_sock = make_socket(context, zmq.ROUTER)
        sockets.append(router_sock)
        address = f"ipc://{tmp_path}/r.ipc"
        router_sock.bind(address)
        dealer_sock = make_socket(context, zmq.DEALER, identity="area0")
        sockets.append(dealer_sock)
        dealer_sock.connect(address)
        router = Endpoint(router_sock, RecordingLog(), Counters(), routed=True)
        dealer = Endpoint(dealer_sock, RecordingLog(), Counters(), routed=False)
        yield router, dealer, context, address
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()


def test_router_receives_with_identity(pair) -> None:
    router, dealer, _, _ = pair
    state = torch.randn(3, 8)
    assert dealer.send(SAMPLES[Kind.EFFERENCE], [state])
    assert dealer.send(SAMPLES[Kind.HEARTBEAT])
    sender, message = router.receive(timeout=5.0)
    assert sender == "area0"
    assert message.header == SAMPLES[Kind.EFFERENCE]
    assert torch.equal(message.tensors[0], state)
    sender, message = router.receive(timeout=5.0)
    assert sender == "area0" and message.header == SAMPLES[Kind.HEARTBEAT]
    # and back to the dealer by identity
    reply = torch.randn(3, 8)
    assert router.send(SAMPLES[Kind.PREDICTION], [reply], to="area0")
    received = dealer.receive(timeout=5.0)
    assert received is not None
    assert received[0] is None and torch.equal(received[1].tensors[0], reply)
    assert router.counters.received == 2 and router.counters.sent == 1
    assert dealer.counters.sent == 2 and dealer.counters.received == 1
    with pytest.raises(ValueError, match="destination"):
        router.send(SAMPLES[Kind.HEARTBEAT])


def test_router_survives_random_garbage(pair) -> None:
    router, dealer, _, _ = pair
    rng = random.Random(1)
    valid = valid_frames()
    garbage = []
    for i in range(50):
        n = rng.randint(1, 5)
        frames = [rng.randbytes(rng.randint(0, 64)) for _ in range(n)]
        if i % 3 == 0:  # a valid preamble in front of garbage
            frames[0] = valid[0]
        if i % 5 == 0:  # a valid header with a tensor buffer of the wrong size (33 ≠ 32)
            frames = [*valid[:2], rng.randbytes(33)]
        garbage.append(frames)
    for frames in garbage:
        dealer.sock.send_multipart(frames)
    state = torch.arange(8, dtype=torch.float32).reshape(1, 8)
    assert dealer.send(SAMPLES[Kind.EFFERENCE], [state])
    received = router.receive(timeout=5.0)  # skips the garbage on its way to the valid one
    assert received is not None
    sender, message = received
    assert sender == "area0" and torch.equal(message.tensors[0], state)
    assert router.counters.rejected == 50
    assert router.counters.received == 51
    rejections = [e for e in router.log.events if e[0] == "message_rejected"]
    assert len(rejections) == 50
    assert all(fields["reason"] and fields["sender"] == "area0" for _, fields in rejections)
    assert router.receive(timeout=0.05) is None


def test_router_survives_malformed_headers(pair) -> None:
    """Malformed headers (not just random bytes) are rejected, never raised."""
    router, dealer, _, _ = pair
    for changes in MALFORMED.values():
        dealer.sock.send_multipart(malformed_frames(changes))
    assert dealer.send(SAMPLES[Kind.EFFERENCE], [torch.ones(1, 8)])
    received = router.receive(timeout=5.0)
    assert received is not None and received[1].kind == Kind.EFFERENCE
    assert router.counters.rejected == len(MALFORMED)


def test_receive_times_out_on_a_silent_socket(pair) -> None:
    router, dealer, _, _ = pair
    started = time.monotonic()
    assert router.receive(timeout=0.2) is None
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.0, elapsed
    started = time.monotonic()
    assert dealer.receive(timeout=0.0) is None
    assert time.monotonic() - started < 1.0


def test_send_to_a_vanished_peer_returns_false(pair) -> None:
    router, dealer, _, _ = pair
    assert router.send(SAMPLES[Kind.HEARTBEAT], to="nobody") is False
    assert router.counters.dropped == 1 and router.counters.sent == 0
    # a peer that was there and went away
    assert dealer.send(SAMPLES[Kind.HEARTBEAT])
    assert router.receive(timeout=5.0)[0] == "area0"
    assert router.send(SAMPLES[Kind.HEARTBEAT], to="area0") is True
    dealer.sock.close(linger=0)
    deadline = time.monotonic() + 5.0
    while router.send(SAMPLES[Kind.HEARTBEAT], to="area0"):
        assert time.monotonic() < deadline, "ROUTER_MANDATORY must report the vanished peer"
        time.sleep(0.01)
    assert router.counters.dropped >= 2


def test_dealer_send_without_peer_does_not_block() -> None:
    context = zmq.Context()
    sock = make_socket(context, zmq.DEALER, identity="lonely")
    try:
        endpoint = Endpoint(sock, RecordingLog(), Counters(), routed=False)
        started = time.monotonic()
        assert endpoint.send(SAMPLES[Kind.HEARTBEAT]) is False  # no peer at all: dropped
        assert time.monotonic() - started < 1.0
        assert endpoint.counters.dropped == 1
        assert sock.getsockopt(zmq.LINGER) == 0
        assert sock.getsockopt(zmq.SNDHWM) > 0 and sock.getsockopt(zmq.RCVHWM) > 0
    finally:
        sock.close(linger=0)
        context.term()


def test_a_link_that_connects_before_its_peer_binds_delivers_within_a_short_run(tmp_path) -> None:
    """A DEALER that connected before its ROUTER bound (an area forked before the olive) gets its
    queued message through within 80 ms, before a short run closes it with linger 0 — libzmq's
    100 ms retry lost every target of such a run."""
    context = zmq.Context()
    address = f"ipc://{tmp_path}/late.ipc"
    dealer_sock = make_socket(context, zmq.DEALER, identity="area0")
    router_sock = make_socket(context, zmq.ROUTER)
    try:
        dealer_sock.connect(address)  # nothing bound yet: the first attempt fails
        dealer = Endpoint(dealer_sock, RecordingLog(), Counters(), routed=False)
        assert dealer.send(SAMPLES[Kind.TARGET], [torch.ones(2, 4)])  # queued for the retry
        time.sleep(0.01)
        router_sock.bind(address)
        arrived = router_sock.poll(80, zmq.POLLIN)
        dealer_sock.close(linger=0)  # the run is over
        assert arrived, "the queued target waited for a reconnect longer than the run"
        router = Endpoint(router_sock, RecordingLog(), Counters(), routed=True)
        received = router.receive(1.0)
        assert received is not None and received[0] == "area0"
        assert received[1].kind == Kind.TARGET
    finally:
        for sock in (dealer_sock, router_sock):
            sock.close(linger=0)
        context.term()


FLOOD_THEN_EXIT = textwrap.dedent(
    """
    import sys, time, zmq
    from wire.channel import make_socket
    context = zmq.Context()
    router = make_socket(context, zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, 10)  # this side's input stops after a few messages
    address = f"ipc://{sys.argv[1]}/flood.ipc"
    router.bind(address)
    dealer = make_socket(context, zmq.DEALER, identity="flooder")
    dealer.setsockopt(zmq.SNDHWM, 10000)
    dealer.connect(address)
    for _ in range(5000):
        try:
            dealer.send(b"x" * 30, zmq.NOBLOCK)
        except zmq.Again:
            break
    time.sleep(0.3)
    dealer.close(linger=0)  # the flooder exits while the receiver's input is stopped
    time.sleep(1.5)  # longer than any ZMTP heartbeat interval
    received = 0
    while router.poll(100, zmq.POLLIN):
        router.recv_multipart()
        received += 1
    router.close(linger=0)
    context.term()
    print(received)
    """
)


def test_a_flooding_peer_that_exits_does_not_abort_the_receiver(tmp_path: Path) -> None:
    """A peer that fills this side's receive queue and then exits leaves the receiving
    process alive and its queued messages readable (with ZMTP heartbeats on, libzmq 4.3.5
    aborted it: the orchestrator died after a flooding region's exit)."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", FLOOD_THEN_EXIT, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert int(done.stdout.strip()) > 0


# --- 4. no pickle -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_no_pickle_on_the_wire(kind: Kind) -> None:
    header = SAMPLES[kind]
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    frames = wire(encode(header, [tensor] * header.n_tensors))
    assert frames[0] == MAGIC + bytes([VERSION, int(kind)])
    body = msgpack.unpackb(frames[1], raw=False)  # the header is msgpack ...
    assert isinstance(body, dict)
    assert not frames[1].startswith(b"\x80"), "... not a pickle (PROTO opcode)"
    assert b"torch" not in frames[1] and b"\x93NUMPY" not in frames[1]
    for frame in frames[2:]:  # tensors are their raw bytes, nothing else
        assert frame == raw(tensor)
