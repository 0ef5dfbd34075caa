"""The run spec: one frozen dataclass describing a run, loaded from TOML and flags.

Precedence, lowest first: the dataclass defaults (target reaching, as in the paper) → the
task preset (e.g. the seqMNIST numbers) → a TOML file → command-line flags. Every field has
a docstring-like ``doc`` in its metadata; ``launch.py run --help`` prints them all. Values
derived from the fields are computed in one place: the properties at the bottom of
:class:`RunSpec`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = ("target-reaching", "seqmnist", "c-seqmnist", "dd-seqmnist", "ld-seqmnist", "captions")
MODELS = ("lstm", "cc-dni", "scc-dni", "zero-dni")
DNI_MODELS = ("cc-dni", "scc-dni")  # the paper's models with a learning cerebellum
TIMINGS = ("lockstep", "wait", "stale")
UPDATES = ("truncation", "sequence")
TOPOLOGIES = ("single", "chain")
CHAIN_BLOCKS = ("ff", "lstm")
CHAIN_MODES = ("locked", "backward-unlocked", "forward-unlocked", "fully-unlocked")
BACKWARD_UNLOCKED_MODES = ("backward-unlocked", "fully-unlocked")  # ĝ_k from the cerebellum
FORWARD_UNLOCKED_MODES = ("forward-unlocked", "fully-unlocked")  # ĥ_k from the cerebellum
CHAIN_INPUT_SIZE = 28 * 28  # a chain's network input x: a flattened MNIST image
LESIONABLE = ("cerebellum", "olive")
# steps of one sequence of each single-area task (its ``n_steps``; tests check them against the
# tasks): with a truncation T ≥ this, every sequence is one truncation whose end has no future,
# so a DNI area would never consult its cerebellum — refused
SEQUENCE_STEPS = {
    "target-reaching": 10,
    "captions": 22,  # image, <bos>, at most 20 words
    **{task: 28 for task in TASKS if task.endswith("seqmnist")},
}


class SpecError(ValueError):
    """A spec field has a bad value; the message names the field."""


def _f(default: Any, doc: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "choices": choices})


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run. Defaults are the paper's target-reaching numbers."""

    # --- task ---------------------------------------------------------------------------
    task: str = _f("target-reaching", "Task to learn.", TASKS)
    n_targets: int = _f(
        6, "Target reaching: non-zero cues / targets on the circle (the origin is extra)."
    )
    cue: str = _f(
        "integer",
        "Target reaching cue: 'integer' (±1..±3, the paper's text), 'integer-x0.1' (the "
        "authors' code), '2d' (target ×0.1), '28d-noisy' (binary code + Gaussian noise).",
        ("integer", "integer-x0.1", "2d", "28d-noisy"),
    )
    input_noise_var: float = _f(0.1, "Variance of the per-step input noise of '28d-noisy'.")
    n_validation: int = _f(70, "Target reaching: validation examples (10 per class by default).")
    gamma: int = _f(1, "ld-seqMNIST loss sparsity: a loss every gamma steps (1, 5 or 8).")
    data_dir: str = _f("", "MNIST root (holding MNIST/raw). Empty: $CCDNI_DATA, else ./data.")
    train_subset: int = _f(
        0,
        "seqMNIST: use only this many training examples (0: all 48 000). Captions: only the "
        "first this many training images, with all their captions (0: all).",
    )
    val_subset: int = _f(
        0,
        "seqMNIST: use only this many validation examples (0: all 12 000). Captions: only the "
        "first this many validation images (0: all).",
    )
    download: bool = _f(False, "seqMNIST: download MNIST with torchvision when it is missing.")
    captions_dir: str = _f(
        "",
        "Captions: a corpus folder in COCO format (captions_SPLIT.json and features_SPLIT.npy "
        "for SPLIT in train, val, test; optional vocab.json). Empty: the MNIST-scene corpus "
        "cached under the data directory, DATA/captions/mnist-scenes (built by 'python "
        "launch.py captions-corpus').",
    )
    captions_per_image: int = _f(
        0,
        "Captions: training captions per image and epoch. 0: every caption (an epoch is every "
        "image–caption pair, as in the paper); n ≥ 1: n of each image's captions, drawn afresh "
        "every epoch.",
    )

    # --- cortical area --------------------------------------------------------------------
    model: str = _f(
        "cc-dni",
        "Model: 'lstm' (truncated BPTT only), 'cc-dni' (dense cerebellum), 'scc-dni' (each "
        "granule unit sees K inputs), or the control 'zero-dni': a dense cerebellum and olive "
        "that exchange every message as for cc-dni, but whose synthesiser never learns, so "
        "every prediction stays at its zero initialisation — it isolates the effect of the "
        "extra optimiser steps a DNI area takes (one per truncation) from the effect of "
        "predicted feedback.",
        MODELS,
    )
    hidden: int = _f(10, "LSTM units H of the cortical area (state [h;c] has 2H).")
    bias_factor: float = _f(
        1.0, "b: scales the initial LSTM input and recurrent weights (paper: 0.01..2)."
    )
    truncation: int = _f(2, "T: truncation size of truncated BPTT, in steps.")
    update: str = _f(
        "truncation",
        "When the area steps its optimiser: after every truncation (online, the paper's text) "
        "or once per sequence (the authors' code).",
        UPDATES,
    )
    step_without_feedback: bool = _f(
        False,
        "Step the optimiser after a truncation (or sequence, or chain batch) even when no real "
        "or synthetic gradient reached the parameters, i.e. on a zero gradient, which Adam "
        "still turns into a weight change through its moments. Off: the paper's rule (appendix "
        "A), parameters move only when a gradient is available. On: the behaviour of ccdni "
        "before 0.2, kept to reproduce old numbers.",
    )
    lr: float = _f(1e-3, "Learning rate of the cortical area (Adam).")
    batch_size: int = _f(50, "Examples per batch.")
    epochs: int = _f(300, "Training epochs.")
    seed: int = _f(0, "Seed of weights and data order (each region derives its own stream).")

    # --- cerebellum and olive ---------------------------------------------------------------
    cerebellum_hidden: int = _f(80, "M: hidden (granule) units per cerebellar hidden layer.")
    cerebellum_layers: int = _f(1, "Hidden layers of the synthesiser (1 or 2).")
    sparsity_k: int = _f(4, "K: inputs per granule unit in sCC-DNI (0: dense).")
    synthetic_scale: float = _f(0.1, "λ: scale of the synthetic gradient, as in the paper.")
    cerebellum_lr: float = _f(0.0, "Learning rate of the cerebellum (0: same as lr).")
    adam_beta1: float = _f(0.9, "Adam β1 (authors' code).")
    adam_beta2: float = _f(0.98, "Adam β2 (authors' code).")
    adam_eps: float = _f(1e-9, "Adam ε (authors' code).")
    grad_clip: float = _f(1.0, "Gradient-norm clip for every optimiser (0: off).")

    # --- lesions ---------------------------------------------------------------------------
    ablate: str = _f(
        "",
        "Scheduled lesions, comma-separated REGION@epoch=E (e.g. 'cerebellum@epoch=50'): the "
        "region's process is killed when the areas reach epoch E.",
    )

    # --- chains of feed-forward areas (spatial DNI on MNIST) -------------------------------
    topology: str = _f(
        "single",
        "'single': one recurrent area (the task above). 'chain': chain_areas feed-forward "
        "areas on MNIST (784→W→…→W→10, BatchNorm + ReLU), each its own process; the task, "
        "hidden and truncation fields are then unused.",
        TOPOLOGIES,
    )
    chain_areas: int = _f(2, "Chain: number of areas K (area 0: 784→W; the others W→W).")
    chain_width: int = _f(256, "Chain: width W of every hidden block (the boundary size).")
    chain_block: str = _f(
        "ff",
        "Chain: each area's block. 'ff': Linear + BatchNorm + ReLU on the flattened image "
        "(784→W→…→W→10). 'lstm': stacked LSTM layers on seqMNIST (28 rows of 28 pixels; area "
        "0: LSTM 28→W, the others W→W, each over the whole sequence; the last area reads the "
        "class at the last step); boundaries carry the hidden sequence as (B·28, W) rows.",
        CHAIN_BLOCKS,
    )
    chain_mode: str = _f(
        "locked",
        "Chain: 'locked' (area k+1 waits for h_k from area k, area k for ∂L/∂h_k from area "
        "k+1: true backprop); 'backward-unlocked' (area k uses the cerebellum's ĝ_k = "
        "C(h_k) and moves on; area k+1 sends the true ∂L/∂h_k to the olive as the target); "
        "'forward-unlocked' (area k+1 runs on the cerebellum's ĥ_k = C(x) from the image x "
        "instead of waiting for h_k; area k sends h_k to the olive as the target and still "
        "waits for ∂L/∂ĥ_k from area k+1); 'fully-unlocked' (both: no training-time message "
        "between areas). Validation always runs the true chain h_0 → h_1 → ….",
        CHAIN_MODES,
    )
    chain_max_lag: int = _f(
        3,
        "Chain, unlocked modes: the cerebellum answers an area's efference of batch n (h_k "
        "on boundary{k}, or x on forward{k}) only once it has applied the climbing-fibre "
        "errors of batches < n − chain_max_lag on that interface, so a fast area cannot run "
        "arbitrarily far ahead of the learning of its synthesiser (long delays make it "
        "diverge) nor of the area whose activity ĥ stands for. -1: no such bound (backward-"
        "unlocked only: an area still runs at most 64 batches ahead of the next one; the "
        "forward modes need the bound).",
    )

    # --- processes ------------------------------------------------------------------------
    inprocess: bool = _f(False, "Run every region in this process (the numerical reference).")
    timing: str = _f(
        "wait",
        "How an area waits on the cerebellum: 'lockstep' (deterministic), 'wait' (up to "
        "wait_timeout), 'stale' (never wait; use the freshest prediction).",
        TIMINGS,
    )
    wait_timeout: float = _f(1.0, "Seconds an area waits for a prediction under 'wait'.")
    concurrent_learning: bool = _f(
        False,
        "Outside lockstep, the cerebellum learns in a second thread (niceness 5) while it "
        "answers efferences from a copy of its weights refreshed after every learning step, "
        "so a prediction never waits for a learning step. Off by default: one thread is the "
        "path every lesion test covers, and on 2 cores the gain is of the order of the "
        "run-to-run noise (benchmarks/README.md). "
        "Off: it learns between answers, one error at a time, in one thread, answering an "
        "efference that arrives during a step between the step's stages. Lockstep, and "
        "chains (whose areas wait for applied errors to bound their lag), always learn in "
        "one thread.",
    )
    lockstep_timeout: float = _f(
        60.0, "Seconds an area waits under 'lockstep' before failing with an error."
    )
    heartbeat_interval: float = _f(0.5, "Seconds between application heartbeats.")
    heartbeat_timeout: float = _f(5.0, "A region silent this long is reported unresponsive.")
    startup_timeout: float = _f(120.0, "Seconds to wait for every region to report ready.")
    stop_deadline: float = _f(10.0, "Seconds a region gets to exit after 'stop' before SIGTERM.")
    threads: int = _f(1, "Intra-op threads per process (two cores are shared by all regions).")
    device: str = _f("cpu", "Torch device of every region ('cpu', 'cuda', 'cuda:1').")
    area_devices: str = _f(
        "",
        "Comma-separated torch devices for the area processes, round-robin (area k gets entry "
        "k mod n), e.g. 'cuda:0,cuda:1'; the cerebellum and olive keep `device`. Empty: "
        "`device` everywhere. More areas than GPUs: areas share a GPU (kernels time-sliced).",
    )
    pin_cores: bool = _f(
        False,
        "Pin area k to CPU core k mod C (of the C cores this process may use); the cerebellum "
        "and olive share the cores left over, or float over all when none are left.",
    )
    transport: str = _f(
        "ipc",
        "How regions reach each other: 'ipc' (socket files in an owner-only RUN/sock folder, "
        "one machine) or 'tcp' (ephemeral ports on tcp_host, recorded in regions.json; "
        "authenticated and encrypted with per-run CURVE keys unless insecure_tcp).",
        ("ipc", "tcp"),
    )
    tcp_host: str = _f(
        "127.0.0.1",
        "Address the tcp endpoints bind to and are reached at (local backend); with the Ray "
        "backend each region binds on its node's address.",
    )
    insecure_tcp: bool = _f(
        False,
        "tcp without CURVE: anyone who can reach the ports can read and inject messages. Only "
        "on a trusted, closed cluster network.",
    )
    backend: str = _f(
        "local",
        "What starts the region processes: 'local' (this machine's processes) or 'ray' (Ray "
        "actors in a placement group, needs the ray extra; implies transport tcp).",
        ("local", "ray"),
    )
    ray_address: str = _f(
        "",
        "Ray cluster to join with backend ray ('auto', 'HOST:PORT'); empty: start a local Ray "
        "in this process.",
    )

    # --- outputs ----------------------------------------------------------------------------
    runs_dir: str = _f("runs", "Parent folder of run directories.")
    run_name: str = _f(
        "",
        "Run directory name (empty: time + task + model + T + seed; for chains time + "
        "block + K + mode + seed).",
    )
    figures: bool = _f(True, "Draw the PNG figures at the end of the run.")
    tensorboard: bool = _f(
        False,
        "Also write every metric as TensorBoard scalars (REGION/FIELD per epoch) into "
        "RUN/tensorboard/ (needs the tensorboard extra: pip install -e '.[tensorboard]').",
    )
    record_epochs: str = _f(
        "",
        "Epochs (0-based) at which the area records correlations into its metrics: r_h and "
        "r_pop_h over the hidden activity h of the first validation batch (all samples and "
        "steps, after the epoch's training), r_g and r_pop_g over the synthetic feedback ĝ "
        "received during the epoch's first batch (all its truncations). Comma-separated "
        "epochs, ranges A-B, strided ranges A-B:S, 'last' or 'all'; e.g. '0-99,299' or "
        "'0-299:10'. Empty: no recording (the numbers are identical either way).",
    )
    progress: bool = _f(True, "Show the live progress display on a terminal.")
    log_level: str = _f("info", "Log level.", ("debug", "info", "warning", "error"))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise SpecError(f"{f.name}={value!r} is not one of: {', '.join(choices)}")
        positive = (
            "hidden",
            "truncation",
            "batch_size",
            "epochs",
            "cerebellum_hidden",
            "threads",
            "chain_width",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "lr",
            "wait_timeout",
            "lockstep_timeout",
            "heartbeat_interval",
            "heartbeat_timeout",
            "startup_timeout",
            "stop_deadline",
            "adam_eps",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SpecError(f"{name} must be a positive finite number, got {value}")
        for name in (
            "synthetic_scale",
            "cerebellum_lr",
            "grad_clip",
            "input_noise_var",
            "bias_factor",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SpecError(f"{name} must be a finite number ≥ 0, got {value}")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise SpecError("adam_beta1 and adam_beta2 must lie in [0, 1)")
        if self.cerebellum_layers not in (1, 2):
            raise SpecError(f"cerebellum_layers must be 1 or 2, got {self.cerebellum_layers}")
        if self.n_targets < 1:
            raise SpecError(f"n_targets must be at least 1, got {self.n_targets}")
        if self.captions_per_image < 0:
            raise SpecError(f"captions_per_image must be ≥ 0, got {self.captions_per_image}")
        if self.gamma < 1:
            raise SpecError(f"gamma must be at least 1, got {self.gamma}")
        if self.sparsity_k < 0 or (self.model == "scc-dni" and self.sparsity_k > self.state_size):
            raise SpecError(
                f"sparsity_k must lie in [0, 2H={self.state_size}], got {self.sparsity_k}"
            )
        if self.model == "scc-dni" and self.sparsity_k == 0:
            raise SpecError("model scc-dni needs sparsity_k ≥ 1 (use cc-dni for dense)")
        if self.n_validation < 1 or self.train_subset < 0 or self.val_subset < 0:
            raise SpecError("n_validation must be ≥ 1 and the subsets ≥ 0")
        if (
            self.task not in ("target-reaching", "captions")  # captions: images, not pairs
            and self.train_subset
            and self.train_subset < self.batch_size
        ):
            raise SpecError(
                f"train_subset={self.train_subset} is smaller than batch_size={self.batch_size}"
            )

        if self.topology == "chain":
            if self.chain_max_lag < -1:
                raise SpecError(f"chain_max_lag must be ≥ -1, got {self.chain_max_lag}")
            if self.chain_areas < 2:
                raise SpecError(f"chain_areas must be at least 2, got {self.chain_areas}")
            if self.timing == "lockstep" and self.uses_cerebellum and self.chain_max_lag < 0:
                raise SpecError(
                    f"timing lockstep with chain_mode {self.chain_mode} needs chain_max_lag ≥ 0: "
                    "the lag window is what makes the cerebellum's answers deterministic"
                )
            if self.chain_mode in FORWARD_UNLOCKED_MODES and self.chain_max_lag < 0:
                raise SpecError(
                    f"chain_mode {self.chain_mode} needs chain_max_lag ≥ 0: nothing else "
                    "bounds how far area k+1 runs ahead of area k"
                )
            if self.chain_block == "lstm" and self.chain_mode in FORWARD_UNLOCKED_MODES:
                raise SpecError(
                    f"chain_mode {self.chain_mode} needs chain_block ff: an LSTM layer's "
                    "activity h_k(t) depends on every earlier row, which the cerebellum's "
                    "forward model of the image cannot give row by row"
                )
            if self.ablate and not self.uses_cerebellum:
                raise SpecError("ablate: chain_mode locked has no cerebellum or olive to lesion")

        if self.inprocess and (self.pin_cores or self.area_devices):
            raise SpecError("pin_cores and area_devices place processes: not with inprocess")
        if self.backend == "ray" and self.inprocess:
            raise SpecError("backend ray starts region processes: not with inprocess")
        if self.backend == "ray" and self.transport != "tcp":
            raise SpecError(
                "backend ray needs transport tcp (Ray actors may run on other machines; ipc "
                "sockets reach only this one): add --transport tcp"
            )
        if self.insecure_tcp and self.transport != "tcp":
            raise SpecError("insecure_tcp only applies to transport tcp")
        if not self.tcp_host or any(c.isspace() for c in self.tcp_host):
            raise SpecError(f"tcp_host {self.tcp_host!r} is not a host address")
        for device in (d.strip() for d in self.area_devices.split(",") if d.strip()):
            if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
                raise SpecError(
                    f"area_devices: {device!r} is not a torch device (cpu, cuda, cuda:N)"
                )

        if self.record_epochs:
            self.recorded_epochs  # noqa: B018 - parses and validates

        steps = SEQUENCE_STEPS.get(self.task)
        if (
            self.topology == "single"
            and self.uses_cerebellum
            and steps
            and self.truncation >= steps
        ):
            raise SpecError(
                f"truncation={self.truncation} with model {self.model}: a {self.task} sequence "
                f"has {steps} steps, so it would be one truncation and the cerebellum would never "
                f"be consulted (use truncation < {steps}, or model lstm)"
            )

        if self.ablate:
            for _region, epoch in self.ablation_schedule:
                if self.topology == "single" and self.model == "lstm":
                    raise SpecError("ablate: model lstm has no cerebellum or olive to lesion")
                if epoch >= self.epochs:
                    raise SpecError(f"ablate: epoch {epoch} is not before epochs={self.epochs}")

    # --- derived values: computed here and only here ----------------------------------------
    @property
    def ablation_schedule(self) -> tuple[tuple[str, int], ...]:
        """Parsed ``ablate``: ((region, epoch), ...) sorted by epoch."""
        schedule = []
        for item in filter(None, (part.strip() for part in self.ablate.split(","))):
            region, sep, when = item.partition("@")
            key, eq, value = when.partition("=")
            if not sep or key.strip() != "epoch" or not eq or region not in LESIONABLE:
                raise SpecError(
                    f"ablate entry {item!r} must look like REGION@epoch=E with REGION in "
                    f"{', '.join(LESIONABLE)}"
                )
            try:
                epoch = int(value)
            except ValueError:
                raise SpecError(
                    f"ablate entry {item!r}: epoch {value!r} is not an integer"
                ) from None
            if epoch < 0:
                raise SpecError(f"ablate entry {item!r}: epoch must be ≥ 0")
            schedule.append((region, epoch))
        return tuple(sorted(schedule, key=lambda x: x[1]))

    @property
    def recorded_epochs(self) -> frozenset[int]:
        """Parsed ``record_epochs``: the 0-based epochs at which correlations are recorded."""
        epochs: set[int] = set()
        last = self.epochs - 1
        for item in filter(None, (part.strip() for part in self.record_epochs.split(","))):
            if item == "all":
                epochs.update(range(self.epochs))
                continue
            if item == "last":
                epochs.add(last)
                continue
            span, _, stride_text = item.partition(":")
            low_text, dash, high_text = span.partition("-")
            try:
                low = int(low_text)
                high = int(high_text) if dash else low
                stride = int(stride_text) if stride_text else 1
            except ValueError:
                raise SpecError(
                    f"record_epochs entry {item!r} must be E, A-B, A-B:S, 'last' or 'all'"
                ) from None
            if stride < 1 or low < 0 or high < low:
                raise SpecError(f"record_epochs entry {item!r}: need 0 ≤ A ≤ B and S ≥ 1")
            if low > last:
                raise SpecError(
                    f"record_epochs entry {item!r}: epoch {low} is not before epochs={self.epochs}"
                )
            epochs.update(range(low, min(high, last) + 1, stride))  # ranges end at the last epoch
        return frozenset(epochs)

    @property
    def state_size(self) -> int:
        """2H: the size of the area state [h; c] the cerebellum sees."""
        return 2 * self.hidden

    @property
    def interfaces(self) -> tuple[str, ...]:
        """The interfaces the cerebellum and olive serve: one per cortical area, or for a
        chain one per boundary between areas k and k+1: ``boundary{k}`` (ĝ_k from h_k; the
        backward-unlocked modes, and locked, where nothing serves it) and ``forward{k}``
        (ĥ_k from the image x; the forward-unlocked modes)."""
        if self.topology == "chain":
            boundaries = range(self.chain_areas - 1)
            backward = self.chain_mode in BACKWARD_UNLOCKED_MODES or self.chain_mode == "locked"
            forward = self.chain_mode in FORWARD_UNLOCKED_MODES
            return tuple(
                [f"boundary{k}" for k in boundaries if backward]
                + [f"forward{k}" for k in boundaries if forward]
            )
        return ("area0",)

    @property
    def area_names(self) -> tuple[str, ...]:
        """The cortical area processes."""
        if self.topology == "chain":
            return tuple(f"area{k}" for k in range(self.chain_areas))
        return self.interfaces

    @property
    def area_role(self) -> str:
        """The cortical areas' process shell (``ccdni.base.region.SHELLS``)."""
        return "chain-area" if self.topology == "chain" else "area"

    @property
    def interface_io(self) -> dict[str, tuple[int, int]]:
        """(input, output) size of each interface's synthesiser: the efference it reads and
        the prediction (= target, climbing-fibre error) it writes. Single area: (2H, 2H);
        chain: boundary{k} (W, W), forward{k} (784, W)."""
        if self.topology == "chain":
            width = self.chain_width
            return {
                name: (CHAIN_INPUT_SIZE if name.startswith("forward") else width, width)
                for name in self.interfaces
            }
        return {name: (self.state_size, self.state_size) for name in self.interfaces}

    @property
    def interface_sizes(self) -> dict[str, int]:
        """Output size (prediction, target, error) at each interface: see interface_io."""
        return {name: io[1] for name, io in self.interface_io.items()}

    @property
    def uses_cerebellum(self) -> bool:
        if self.topology == "chain":
            return self.chain_mode != "locked"
        return self.model != "lstm"

    @property
    def granule_inputs(self) -> int | None:
        """K for the sparse cerebellum, None for dense."""
        return self.sparsity_k if self.model == "scc-dni" else None

    @property
    def cerebellum_learns(self) -> bool:
        """False for the zero-dni control: the synthesiser keeps its zero output for good."""
        return self.topology == "chain" or self.model != "zero-dni"

    @property
    def cerebellar_lr(self) -> float:
        return self.cerebellum_lr or self.lr

    @property
    def expansion_ratio(self) -> float:
        """M/N with N = 2H."""
        return self.cerebellum_hidden / self.state_size

    @property
    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir or os.environ.get("CCDNI_DATA", "") or "data")

    @property
    def resolved_captions_dir(self) -> Path:
        """The caption corpus: ``captions_dir``, else DATA/captions/mnist-scenes."""
        if self.captions_dir:
            return Path(self.captions_dir)
        return self.resolved_data_dir / "captions" / "mnist-scenes"

    @property
    def default_run_name(self) -> str:
        if self.topology == "chain":
            block = "" if self.chain_block == "ff" else f"-{self.chain_block}"
            return f"chain{block}-K{self.chain_areas}-{self.chain_mode}-s{self.seed}"
        return f"{self.task}-{self.model}-T{self.truncation}-s{self.seed}"

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Task presets: the paper's numbers for each task family (appendix A).
SEQMNIST_PRESET: dict[str, Any] = {
    "hidden": 30,  # as in the paper
    "cerebellum_hidden": 300,  # as in the paper
    "batch_size": 50,  # as in the paper
    "lr": 1e-4,  # as in the paper
    "epochs": 25,  # as in the paper
    "truncation": 5,
}
CAPTIONS_PRESET: dict[str, Any] = {
    "hidden": 256,  # as in the paper
    "cerebellum_hidden": 1024,  # as in the paper
    "cerebellum_layers": 2,  # as in the paper
    "batch_size": 100,  # as in the paper
    "lr": 1e-3,  # as in the paper
    "epochs": 10,  # the paper's learning curves (Fig. 4b) run for 10 epochs
    "truncation": 4,  # Fig. 4b's T
}
PRESETS: dict[str, dict[str, Any]] = {
    "target-reaching": {},
    "captions": CAPTIONS_PRESET,
    **{task: SEQMNIST_PRESET for task in TASKS if task.endswith("seqmnist")},
}
CUE_PRESETS: dict[str, dict[str, Any]] = {"28d-noisy": {"hidden": 30}}  # as in the paper

FIELDS = {f.name: f for f in dataclasses.fields(RunSpec)}


def coerce(name: str, value: Any) -> Any:
    """Convert a TOML or flag value to the field's type, or raise SpecError naming it."""
    if name not in FIELDS:
        raise SpecError(f"unknown spec field {name!r}")
    kind = type(FIELDS[name].default)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name}={value!r} is not a valid {kind.__name__}") from None


def read_toml(path: str | Path, table: str | None = "run") -> dict[str, Any]:
    """Read a spec TOML file (flat, or with a ``[run]`` table)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec file {path} is not valid TOML: {exc}") from None
    if table and table in data and isinstance(data[table], dict):
        data = data[table]
    return data


def load_spec(toml_path: str | Path | None = None, **overrides: Any) -> RunSpec:
    """Build a spec: defaults → task preset → TOML file → overrides (flags)."""
    from_file = read_toml(toml_path) if toml_path else {}
    explicit = {
        **{k: coerce(k, v) for k, v in from_file.items()},
        **{k: coerce(k, v) for k, v in overrides.items() if v is not None},
    }
    task = explicit.get("task", RunSpec.task)
    cue = explicit.get("cue", RunSpec.cue)
    values: dict[str, Any] = {}
    values.update(PRESETS.get(task, {}))
    if task == "target-reaching":
        values.update(CUE_PRESETS.get(cue, {}))
    values.update(explicit)
    return RunSpec(**values)


def to_toml(spec: RunSpec) -> str:
    """The spec as a flat TOML document (round-trips through :func:`load_spec`)."""
    lines = ["# ccdni run spec (resolved)"]
    for name, value in spec.to_dict().items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(str(value), ensure_ascii=False)  # a valid TOML basic string
        lines.append(f"{name} = {text}")
    return "\n".join(lines) + "\n"
