"""The captioning area: the cortical area of the caption task (paper §3.3, appendix A.3).

A :class:`~areas.cortex.CorticalArea` — an LSTM of 256 units with a linear readout of its output
states — that reads the image feature X at step 0 and then the caption one word per
step, each word first turned into a learned 256-d embedding, and a linear readout gives the
next word's logits over the vocabulary. Dropout (p = 0.5) is applied to the LSTM's input while
training. The state the cerebellum sees is s = [h; c], as for every cortical area.

The input of a truncation is a slice ``(B, t, 1 + F)`` of the task's packed sequence: channel 0
holds the input word's id at steps ≥ 1 and −1 at the image step; channels 1..F hold the image
feature at the image step and zeros elsewhere (see :mod:`ccdni.tasks.captions.task`). A feature
of the embedding's size (256) is the LSTM's input as it is, as in the paper; a feature of
another size (a COCO user's CNN) goes through a learned linear map to 256 first.

Dropout draws from torch's global generator, which the area core seeds from the run's seed
and saves in its checkpoints, so a run is reproducible and its processes equal its in-process
reference.
"""

from __future__ import annotations

import torch
from torch import nn

from areas.cortex import CorticalArea
from ccdni.tasks.captions.scenes import MAX_WORDS
from ccdni.tasks.captions.vocabulary import BOS_ID, EOS_ID, PAD_ID

EMBEDDING = 256  # word embedding size, as in the paper
DROPOUT = 0.5  # on the LSTM input, as in the paper
IMAGE_STEP = -1  # channel 0 of the packed input at the image step


class CaptioningArea(CorticalArea):
    """Image feature at step 0, then words: embedding → dropout → LSTM → readout over words."""

    stochastic = True  # dropout: the area core seeds torch's global generator for it

    def __init__(
        self,
        feature_size: int,
        vocabulary_size: int,
        hidden: int = 256,
        embedding: int = EMBEDDING,
        dropout: float = DROPOUT,
        bias_factor: float = 1.0,
    ):
        # the LSTM (input: the embedding) and the readout over the vocabulary
        super().__init__(embedding, hidden, vocabulary_size, bias_factor)
        self.feature_size = feature_size
        self.embedding = nn.Embedding(vocabulary_size, embedding, padding_idx=PAD_ID)
        self.image = None if feature_size == embedding else nn.Linear(feature_size, embedding)
        self.dropout = nn.Dropout(dropout)

    def lstm_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """Packed inputs (B, t, 1 + F) → the LSTM's input x (B, t, E), before dropout."""
        ids = inputs[..., 0].long()  # (B, t)
        words = self.embedding(ids.clamp(min=0))  # (B, t, E)
        is_image = (ids == IMAGE_STEP).unsqueeze(-1)  # (B, t, 1)
        if not bool(is_image.any()):
            return words
        feature = inputs[..., 1:]  # (B, t, F)
        picture = feature if self.image is None else self.image(feature)  # (B, t, E)
        return torch.where(is_image, picture, words)

    def forward(
        self, inputs: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs (B, t, 1+F), state (B, 2H) → logits (B, t, V), hiddens (B, t, H), state (B, 2H)."""
        h0, c0 = state.split(self.hidden, dim=1)  # (B, H) each
        x = self.dropout(self.lstm_input(inputs))  # (B, t, E)
        hiddens, (h, c) = self.lstm(x, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
        return self.readout(hiddens), hiddens, torch.cat([h[0], c[0]], dim=1)

    @torch.no_grad()
    def greedy(self, features: torch.Tensor, max_words: int = MAX_WORDS) -> torch.Tensor:
        """Greedy captions of image features (B, F): (B, max_words) word ids, <pad> after <eos>.

        The image at step 0, then <bos>; each step's most probable word is the next input, as
        in the paper; a caption that reaches ``max_words`` words without <eos> is cut there.
        Call in eval mode (no dropout)."""
        batch = features.shape[0]
        image = torch.full((batch, 1, 1), float(IMAGE_STEP), device=features.device)
        packed = torch.cat([image, features.unsqueeze(1)], dim=2)  # (B, 1, 1+F)
        _, _, state = self(packed, self.initial_state(batch, features.device))
        word = torch.full((batch,), BOS_ID, dtype=torch.long, device=features.device)
        padding = torch.zeros(batch, 1, features.shape[1], device=features.device)
        out = torch.full((batch, max_words), PAD_ID, dtype=torch.long, device=features.device)
        done = torch.zeros(batch, dtype=torch.bool, device=features.device)
        for step in range(max_words):
            step_input = torch.cat([word.view(batch, 1, 1).float(), padding], dim=2)  # (B, 1, 1+F)
            logits, _, state = self(step_input, state)  # (B, 1, V)
            word = logits[:, 0].argmax(dim=-1)  # (B,)
            out[:, step] = torch.where(done, torch.full_like(word, PAD_ID), word)
            done |= word == EOS_ID
            if bool(done.all()):
                break
        return out
