"""One home for how models look in every figure and table: order, labels, colours.

Model names come from the spec (:data:`ccdni.base.spec.MODELS`); this module only says how to
show them. Colours follow the paper (LSTM grey, CC-DNI orange, sCC-DNI cyan); the zero-dni
control (cerebellum and olive present, predictions frozen at 0) is drawn in a muted purple,
dashed, so that it reads as a control beside the DNI models.
"""

from __future__ import annotations

from ccdni.base.spec import DNI_MODELS, MODELS

# the order of models in tables and legends: baseline, control, the paper's DNI models
MODEL_ORDER: tuple[str, ...] = tuple(
    m for m in ("lstm", "zero-dni", *DNI_MODELS) if m in MODELS
) + tuple(m for m in MODELS if m not in ("lstm", "zero-dni", *DNI_MODELS))
CONTROL = "zero-dni"
BASELINE = "lstm"
LEARNING_DNI = DNI_MODELS  # the models whose cerebellum learns

MODEL_LABELS = {
    "lstm": "LSTM",
    "zero-dni": "zero-DNI",
    "cc-dni": "CC-DNI",
    "scc-dni": "sCC-DNI",
}
MODEL_COLOURS = {
    "lstm": "grey",
    "zero-dni": "tab:purple",
    "cc-dni": "tab:orange",
    "scc-dni": "tab:cyan",
}
MODEL_LINESTYLES = {"zero-dni": "--"}

# one colour per digit / class: tab10 with its grey (7) swapped for black (targets are grey)
DIGIT_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "black",
    "tab:olive",
    "tab:cyan",
)

# how events of a run are marked on learning curves (events.jsonl)
EVENT_STYLES = {
    "lesion": {"color": "tab:red", "ls": "--"},
    "revive": {"color": "tab:green", "ls": "-."},
    "resume": {"color": "tab:blue", "ls": ":"},
}


def label(model: str) -> str:
    """The display name of a model (the spec name when unknown)."""
    return MODEL_LABELS.get(model, model)


def colour(model: str) -> str:
    """The model's colour (blue when unknown)."""
    return MODEL_COLOURS.get(model, "tab:blue")


def linestyle(model: str) -> str:
    return MODEL_LINESTYLES.get(model, "-")


def ordered(models: object) -> list[str]:
    """``models`` in the table/legend order (unknown ones last, alphabetically)."""
    present = set(models)  # type: ignore[call-overload]
    known = [m for m in MODEL_ORDER if m in present]
    return known + sorted(present - set(known))
