"""Task heads on the EXAONE 4 base model, as transformers defines them.

All three run the decoder stack (with its final norm) and apply one linear layer to the final
hidden states:
- Exaone4ForSequenceClassification: `score` (no bias), read at the last non-padding token;
- Exaone4ForTokenClassification: `score` (with bias), at every token;
- Exaone4ForQuestionAnswering: `qa_outputs` (with bias) giving start and end logits; its base model
  is stored under `transformer.` rather than `model.`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .checkpoint import CheckpointError
from .model import Model
from .weights import WeightReader


class _TaskModel(Model):
    """A base model plus a linear head; no lm_head, no generation."""

    head_name = ""  # tensor prefix of the head
    head_has_bias = True
    base_prefix = "model."

    def __init__(self, config, tensors, **kwargs):
        kwargs.setdefault("prefix", self.base_prefix)
        super().__init__(config, tensors, **kwargs)

    @property
    def num_outputs(self) -> int:
        return self.config.num_labels or 2  # transformers' default num_labels

    def _output_head(self, r: WeightReader):
        c = self.config
        self.head = r.linear(f"{self.head_name}.weight", self.num_outputs, c.hidden_size, prefixed=False)
        self.head_bias = None
        if self.head_has_bias:
            self.head_bias = r.tensor(f"{self.head_name}.bias", (self.num_outputs,), prefixed=False).to_f32()
        elif f"{self.head_name}.bias" in r.tensors:
            raise CheckpointError(f"unexpected tensor {self.head_name}.bias: this head has no bias")
        return None

    def head_outputs(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Head outputs [T, num_outputs] at every position of a fresh sequence."""
        ids = self.check_token_ids(token_ids)
        cache = self.new_cache()
        hidden = np.concatenate(
            [self.hidden_states(ids[s : s + self.prefill_chunk], cache) for s in range(0, len(ids), self.prefill_chunk)]
        )  # [T, hidden], after the final norm
        out = self.head(hidden)
        if self.head_bias is not None:
            out += self.head_bias
        return out

    def forward(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} has no language-model head: use logits()")

    generate = forward

    def labels(self, indices) -> list[str]:
        id2label = self.config.id2label
        return [id2label.get(int(i), f"LABEL_{int(i)}") for i in np.atleast_1d(indices)]


class Exaone4ForSequenceClassification(_TaskModel):
    head_name = "score"
    head_has_bias = False

    def logits(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores [num_labels] of the sequence, read at its last non-padding token (transformers'
        rule: the rightmost token that is not pad_token_id; the last token when there is none)."""
        ids = self.check_token_ids(token_ids)
        pad = self.config.pad_token_id
        last = len(ids) - 1
        if pad is not None:
            non_pad = np.flatnonzero(ids != pad)
            last = int(non_pad[-1]) if non_pad.size else 0
        # Causal attention: the tokens after `last` cannot change its hidden state.
        return self.head_outputs(ids[: last + 1])[last]

    def predict(self, token_ids: Sequence[int] | np.ndarray) -> str:
        """The label name (from id2label) with the highest score."""
        return self.labels(np.argmax(self.logits(token_ids)))[0]


class Exaone4ForTokenClassification(_TaskModel):
    head_name = "score"

    def logits(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores [T, num_labels] for every token."""
        return self.head_outputs(token_ids)

    def predict(self, token_ids: Sequence[int] | np.ndarray) -> list[str]:
        """One label name per token."""
        return self.labels(np.argmax(self.logits(token_ids), axis=-1))


@dataclass(frozen=True)
class AnswerSpan:
    start: int  # first token of the answer
    end: int  # last token of the answer (inclusive)
    score: float  # start_logit + end_logit
    text: str | None = None  # decoded answer, when a tokenizer was given


class Exaone4ForQuestionAnswering(_TaskModel):
    head_name = "qa_outputs"
    base_prefix = "transformer."

    @property
    def num_outputs(self) -> int:
        return 2  # start, end

    def logits(self, token_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start_logits [T], end_logits [T])."""
        out = self.head_outputs(token_ids)
        return np.ascontiguousarray(out[:, 0]), np.ascontiguousarray(out[:, 1])

    def best_span(self, token_ids: Sequence[int] | np.ndarray, *, context_start: int = 0,
                  max_answer_tokens: int = 30, tokenizer=None) -> AnswerSpan:
        """The span start <= end < start + max_answer_tokens, inside [context_start, T), with the
        highest start_logit + end_logit; decoded with `tokenizer` when given."""
        ids = self.check_token_ids(token_ids)
        if not 0 <= context_start < len(ids):
            raise ValueError(f"context_start {context_start} is outside the {len(ids)} tokens")
        if max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
        start_logits, end_logits = self.logits(ids)
        T = len(ids)
        scores = start_logits[:, None] + end_logits[None, :]  # [start, end]
        s, e = np.indices((T, T))
        allowed = (e >= s) & (e - s < max_answer_tokens) & (s >= context_start)
        scores = np.where(allowed, scores, -np.inf)
        start, end = np.unravel_index(int(np.argmax(scores)), scores.shape)
        text = tokenizer.decode(ids[start : end + 1].tolist()) if tokenizer is not None else None
        return AnswerSpan(int(start), int(end), float(scores[start, end]), text)


TASK_MODELS = {
    cls.__name__: cls
    for cls in (Exaone4ForSequenceClassification, Exaone4ForTokenClassification, Exaone4ForQuestionAnswering)
}
__all__ = ["AnswerSpan", "TASK_MODELS", *TASK_MODELS]
