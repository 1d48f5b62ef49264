"""Where canaries go in the training stream (Hubble-style insertion at known counts and times).

Training reads the corpus as one cyclic token stream cut into sequences of ``seq_len``;
sequence ``i`` is row ``i % batch_size`` of step ``i // batch_size``. Each sequence is cut
into slots as long as the longest canary (plus a document break on either side); every
insertion of every canary takes its own slot, drawn with a seeded generator from the part of
training its position policy allows. The plan is a pure function of its inputs, so a
resumed run rebuilds exactly the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from memaudit.errors import InputError

from .canaries import Canary

POLICY_RANGE = {
    "uniform": (0.0, 1.0),
    "early": (0.0, 1 / 3),
    "middle": (1 / 3, 2 / 3),
    "late": (2 / 3, 1.0),
}  # the share of training sequences each position policy draws its slots from


@dataclass(frozen=True)
class Insertion:
    canary: str
    step: int
    row: int
    offset: int  # the canary's first token within the sequence (the document break sits before it)
    stream_offset: int  # the same position in the stream of all training tokens, as consumed

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "row": self.row,
            "offset": self.offset,
            "stream_offset": self.stream_offset,
        }


class Schedule:
    """The exact (B, T) batch of every step: corpus tokens with the planned canaries written in."""

    def __init__(
        self,
        stream: np.ndarray,
        *,
        steps: int,
        batch_size: int,
        seq_len: int,
        insertions=(),
        tokens=None,
    ):
        if len(stream) < 2:
            raise InputError("the corpus tokenizes to fewer than 2 tokens")
        self.stream = stream.astype(np.int64)
        self.steps, self.batch_size, self.seq_len = steps, batch_size, seq_len
        self.by_sequence: dict[int, list[tuple[int, np.ndarray]]] = {}
        for ins in insertions:
            seq = ins.step * batch_size + ins.row
            self.by_sequence.setdefault(seq, []).append((ins.offset, tokens[ins.canary]))

    def batch(self, step: int) -> torch.Tensor:
        first = step * self.batch_size
        rows = np.arange(first, first + self.batch_size)[:, None] * self.seq_len + np.arange(
            self.seq_len
        )
        batch = np.take(self.stream, rows, mode="wrap")  # (B, T): the cyclic stream, in order
        for r in range(self.batch_size):
            for offset, toks in self.by_sequence.get(first + r, ()):
                batch[r, offset - 1 : offset - 1 + len(toks)] = toks  # break, canary, break
        return torch.from_numpy(batch)


def canary_tokens(tokenizer, canaries: list[Canary], eos_id: int) -> dict[str, np.ndarray]:
    """Token ids written into the stream for each member: a document break, the canary, a break.

    Raises
    ------
    InputError
        A canary that tokenizes to fewer than 2 tokens or does not decode back to its text.
    """
    out = {}
    for c in canaries:
        ids = tokenizer(c.text, verbose=False)["input_ids"]
        if len(ids) < 2 or tokenizer.decode(ids) != c.text:
            raise InputError(
                f"canary {c.id} does not tokenize cleanly under this tokenizer: {c.text!r}"
            )
        out[c.id] = np.array([eos_id, *ids, eos_id], dtype=np.int64)
    return out


def plan_insertions(
    canaries: list[Canary],
    tokens: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    seed: int,
) -> list[Insertion]:
    """Draw a distinct slot for every repetition of every member canary."""
    members = [c for c in canaries if c.member and c.repetitions > 0]
    if not members:
        return []
    slot = max(len(tokens[c.id]) for c in members)
    if slot > seq_len:
        raise InputError(f"a canary needs {slot} tokens, more than seq_len = {seq_len}")
    slots_per_seq = seq_len // slot
    n_seq = steps * batch_size
    rng = np.random.default_rng(seed)
    taken: set[tuple[int, int]] = set()
    out = []
    for c in members:
        lo, hi = (int(round(f * n_seq)) for f in POLICY_RANGE[c.policy])
        free = (hi - lo) * slots_per_seq - sum(lo <= s < hi for s, _ in taken)
        if c.repetitions > free:
            raise InputError(
                f"canary {c.id} needs {c.repetitions} insertions but its '{c.policy}' part of "
                f"training has {free} free "
                f"slots; train longer or insert fewer"
            )
        chosen = 0
        while chosen < c.repetitions:
            cell = (int(rng.integers(lo, hi)), int(rng.integers(slots_per_seq)))
            if cell in taken:
                continue
            taken.add(cell)
            seq, k = cell
            offset = k * slot + int(rng.integers(slot - len(tokens[c.id]) + 1)) + 1
            out.append(
                Insertion(c.id, seq // batch_size, seq % batch_size, offset, seq * seq_len + offset)
            )
            chosen += 1
    return out
