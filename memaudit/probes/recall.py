"""In-context recall: how much can a sequence model look up from its own context?

**MQAR** (multi-query associative recall, Zoology): on the model's own vocabulary ids, a
context of D key-value pairs (keys from the lower half of the vocabulary, values from the
upper), filler tokens up to the asked length, then every key again followed by its value.
Accuracy is read on the value positions only: is the value the argmax right after its key?
**Needle in a haystack**: a sentence "The special magic number for KEY is VALUE." at a chosen
depth of filler text from the corpus, then the question; correct when the generation holds
the value. Both are measured over a grid (length x pairs, length x depth) and drawn as heatmaps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import InputError

FILLER = 16  # ids 1..16 pad MQAR contexts and never serve as keys or values


@dataclass(frozen=True)
class MQAR:
    """One MQAR layout over a vocabulary of ``vocab`` ids."""

    vocab: int
    length: int
    pairs: int

    def __post_init__(self):
        if self.pairs < 1 or self.length < 4 * self.pairs:
            raise InputError(f"MQAR needs length >= 4 x pairs ({4 * self.pairs}), got length {self.length} with {self.pairs} pairs")
        if self.vocab // 2 - (FILLER + 1) < self.pairs:
            raise InputError(f"a vocabulary of {self.vocab} has too few key ids for {self.pairs} pairs")

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(ids (T,), target mask (T,)): mask[t] is True where ids[t + 1] is a value to recall after its key."""
        keys = rng.choice(np.arange(FILLER + 1, self.vocab // 2), self.pairs, replace=False)
        values = rng.integers(self.vocab // 2, self.vocab, self.pairs)
        order = rng.permutation(self.pairs)
        context = np.stack([keys, values], 1).reshape(-1)  # k1 v1 k2 v2 ...
        queries = np.stack([keys[order], values[order]], 1).reshape(-1)
        filler = rng.integers(1, FILLER + 1, self.length - len(context) - len(queries))
        ids = np.concatenate([context, filler, queries])
        mask = np.zeros(self.length, dtype=bool)
        mask[len(context) + len(filler) :: 2] = True  # each query key: the next token is its value
        return ids, mask

    def batch(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        pairs = [self.sample(rng) for _ in range(n)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


Predictor = Callable[[np.ndarray], np.ndarray]  # (B, T) ids -> (B, T) predicted next ids


def mqar_accuracy(predict: Predictor, ids: np.ndarray, mask: np.ndarray) -> float:
    """Share of value positions where the predicted next token is the value."""
    pred = predict(ids)  # (B, T)
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    return float((pred[mask] == targets[mask]).mean())


def model_predictor(lm, batch_size: int = 32) -> Predictor:
    """Argmax next tokens of a loaded causal LM."""
    @torch.no_grad()
    def predict(ids: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(ids), batch_size):
            x = torch.as_tensor(ids[start : start + batch_size], dtype=torch.long, device=lm.device)
            out.append(lm.model(input_ids=x).logits.argmax(-1).cpu().numpy())  # (B, T)
        return np.concatenate(out)

    return predict


def check_length(lm, length: int) -> None:
    if length > lm.max_length:
        raise InputError(f"length {length} is longer than the model's context of {lm.max_length} tokens")


def mqar_grid(lm, lengths, pairs, *, n: int = 64, seed: int = 0, predict: Predictor | None = None) -> dict:
    """MQAR accuracy for every (length, pairs) that fits (pairs x 4 <= length); None where it does not."""
    for L in lengths:
        check_length(lm, L)
    predict = predict or model_predictor(lm)
    grid = {}
    for L in lengths:
        for D in pairs:
            if 4 * D > L:
                grid[f"{L}x{D}"] = None
                continue
            ids, mask = MQAR(lm.vocab_size, L, D).batch(n, seed + 7919 * L + D)
            grid[f"{L}x{D}"] = mqar_accuracy(predict, ids, mask)
    return grid


NEEDLE = "The special magic number for {key} is {value}."
QUESTION = "\nWhat is the special magic number for {key}? The special magic number for {key} is"
KEYS = ("Ashford", "Bellmont", "Corvale", "Dunmore", "Elmstead", "Fairholt", "Glenrock", "Hartwell", "Ivydale", "Junewood")


def niah_prompt(tokenizer, filler_ids: list[int], length: int, depth: float, key: str, value: str) -> list[int]:
    """Filler tokens up to ``length`` with the needle sentence at ``depth`` (0 = start, 1 = just before the question)."""
    needle = tokenizer(" " + NEEDLE.format(key=key, value=value) + " ", verbose=False)["input_ids"]
    question = tokenizer(QUESTION.format(key=key), verbose=False)["input_ids"]
    room = length - len(needle) - len(question)
    if room < 0:
        raise InputError(f"length {length} cannot hold the needle and the question ({len(needle) + len(question)} tokens)")
    hay = (filler_ids * (room // max(1, len(filler_ids)) + 1))[:room]
    at = int(round(depth * room))
    return hay[:at] + needle + hay[at:] + question


def niah_grid(lm, filler_text: str, lengths, depths, *, n: int = 8, seed: int = 0, new_tokens: int = 6) -> dict:
    """Share of needles found (the value appears in the generation) per (length, depth)."""
    from ..generation import greedy_generate

    for L in lengths:
        check_length(lm, L + new_tokens)
    filler = lm.tokenizer(filler_text, verbose=False)["input_ids"]
    rng = random.Random(seed)
    grid = {}
    for L in lengths:
        for d in depths:
            cases = [(rng.choice(KEYS), str(rng.randint(1000, 9999))) for _ in range(n)]
            prompts = [niah_prompt(lm.tokenizer, filler, L, d, k, v) for k, v in cases]
            outs = greedy_generate(lm, prompts, new_tokens)
            grid[f"{L}x{d:g}"] = float(np.mean([v in lm.tokenizer.decode(o) for (_, v), o in zip(cases, outs)]))
    return grid


def train_mqar_model(out_dir, *, length: int = 64, pairs: int = 8, steps: int = 600, batch_size: int = 32, lr: float = 3e-3,
                     size: str = "micro", seed: int = 0, progress=None):
    """A small attention model trained on MQAR sequences of one length (loss on value positions only)."""
    from ..corpus import stdlib_snippets
    from ..train import build_model, save_model_dir, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(stdlib_snippets(300, seed=seed), vocab_size=512)  # any vocabulary: MQAR works on ids
    model = build_model(tokenizer, size=size, context=max(256, length), seed=seed)
    task = MQAR(len(tokenizer), length, pairs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        ids, mask = task.batch(batch_size, seed * 1_000_003 + step)
        x = torch.as_tensor(ids, dtype=torch.long)
        labels = torch.full_like(x, -100)
        labels[:, 1:][torch.as_tensor(mask[:, :-1])] = x[:, 1:][torch.as_tensor(mask[:, :-1])]  # the model shifts labels by one
        loss = model(input_ids=x, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if progress:
            progress("training on MQAR", step + 1, steps, f"loss {loss.item():.3f}")
    model.eval()
    return save_model_dir(model, tokenizer, out_dir, extra={"task": "mqar", "length": length, "pairs": pairs, "steps": steps, "size": size})


@dataclass(frozen=True)
class RecallConfig:
    model: str
    task: str = "mqar"
    lengths: tuple[int, ...] = (64, 128, 256)
    pairs: tuple[int, ...] = (2, 4, 8, 16)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    n: int = 64
    filler: str = "stdlib"
    seed: int = 0
    out: str = "runs/recall"
    device: str = "auto"
    report: bool = True

    def __post_init__(self):
        if self.task not in ("mqar", "niah"):
            raise InputError(f"unknown task '{self.task}'; use mqar or niah")
        if any(not 0 <= d <= 1 for d in self.depths):
            raise InputError("depths must lie in [0, 1]")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def run_recall(config: RecallConfig, *, progress=None):
    import time

    from .. import results as rs
    from ..corpus import load_corpus
    from ..models.hf import LoadOptions, load_causal_lm

    t0 = time.perf_counter()
    lm = load_causal_lm(config.model, LoadOptions(device=config.device))
    if config.task == "mqar":
        grid = mqar_grid(lm, config.lengths, config.pairs, n=config.n, seed=config.seed)
        rows, cols, axis = config.lengths, config.pairs, "pairs"
        chance = 1 / (lm.vocab_size - lm.vocab_size // 2)
    else:
        filler = "\n".join(load_corpus(config.filler, max_chars=200_000, seed=config.seed))
        grid = niah_grid(lm, filler, config.lengths, config.depths, n=config.n, seed=config.seed)
        rows, cols, axis = config.lengths, config.depths, "depth"
        chance = None
    out = rs.begin_run(config.out)
    cells = [(L, c, grid[f"{L}x{c:g}" if isinstance(c, float) else f"{L}x{c}"]) for L in rows for c in cols]
    rs.write_scores(out, {"length": [L for L, _, _ in cells], axis: [c for _, c, _ in cells], "accuracy": [a for _, _, a in cells]})
    results = {**rs.run_header(f"probe recall {config.task}", config, {"target": lm}), "data": {"skipped": []}, "task": config.task,
               "axis": axis, "grid": grid, "chance": chance, "timings_s": {"total": time.perf_counter() - t0}}
    if config.report:
        from ..report import write_recall_report

        write_recall_report(out, results, rows=list(rows), cols=list(cols))
    rs.write_results(out, results)
    return out, results
