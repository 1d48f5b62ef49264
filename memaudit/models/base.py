"""The contract between models and the rest of memaudit.

An adapter turns texts into token ids and token ids into hidden states and logits. The
scoring engine calls ``hidden_states`` once per window batch and ``project`` on chunks of
the positions it needs, so the full (batch x length x vocab) logits never exist at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class CausalLM(Protocol):
    name: str
    fingerprint: str
    """Hash of the config and the weights: two models share it only if they compute the same
    thing.
    """
    tokenizer_fingerprint: str
    max_length: int
    """Longest window the model accepts (its positional context)."""
    vocab_size: int
    device: torch.device

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, with the model's own special-token convention (the HF
        adapter's: its tokenizer's, under the BOS rule it was loaded with).
        """

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, T) ids -> (B, T, D) final hidden states, the input of the vocabulary projection.

        ``attention_mask`` None means every position attends causally to all before it.
        """

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, D) hidden states -> (N, V) logits in float32."""

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits, as the model's own forward computes them."""
