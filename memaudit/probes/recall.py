"""In-context recall: how much can a sequence model look up from its own context?

**MQAR** (multi-query associative recall; Arora, Eyuboglu et al. 2023, "Zoology", and its
reference generator ``zoology/data/multiquery_ar.py``). The default layout, ``zoology``, is
that generator's: on ids 0..V-1, D key-value pairs first (D distinct keys from [1, V/2), D
distinct values from [V/2, V)), then the query region of T - 2D positions, whose every second
position is a query slot: each key is asked once, at slot g (g = 0..(T-2D)//2 - 1, D distinct
slots drawn without replacement with probability proportional to alpha * (g+1)^(alpha-1),
Zoology's ``power_a``, 0.01 by default: most queries sit just after the context), and every
other position, the one after each query included, holds a random id from the whole
vocabulary. ``queries-last`` is memaudit's first layout: keys from [17, V/2), values from
[V/2, V) (not necessarily distinct), filler ids 1..16 up to the length, then every key again
in a new order at the very end, each followed by an answer slot (id 0). Accuracy is read at
the query keys only: is the argmax next token the key's value? V defaults to the vocabulary
the model was trained on with ``probe recall-train`` (recorded in its dir), else the model's
vocabulary size; the layout and alpha default to the ones it was trained on, else Zoology's.
**Needle in a haystack**: a sentence "The special magic number for KEY is VALUE." at a chosen
depth of filler text from the corpus, then the question; correct when the generation holds
the value. Both are measured over a grid (length x pairs, length x depth) and drawn as heatmaps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io.progress import Progress

from .config import RecallConfig, check_mqar_layout

FILLER = 16  # queries-last: ids 1..16 pad the context and never serve as keys or values
ANSWER_SLOT = 0  # queries-last: follows each query key in place of its value


def gap_probabilities(space: int, alpha: float) -> np.ndarray:
    """Zoology's power law over the ``space`` query slots: slot g (0-based) has probability
    proportional to ``alpha * (g + 1) ** (alpha - 1)``; alpha = 1 is uniform, small alpha puts
    the queries near the context.
    """
    p = alpha * np.arange(1, space + 1, dtype=float) ** (alpha - 1)  # (space,)
    return p / p.sum()


@dataclass(frozen=True)
class MQAR:
    """One MQAR layout over ids ``0..vocab-1``.

    ``layout="zoology"`` (the default) is Zoology's ``multiquery_ar``; ``"queries-last"`` is
    memaudit's first layout (every query at the end, after filler ids 1..16). See the module
    docstring.
    """

    vocab: int
    length: int
    pairs: int
    layout: str = "zoology"
    alpha: float = 0.01

    def __post_init__(self):
        check_mqar_layout(self.layout, self.alpha)
        if self.pairs < 1 or self.length < 4 * self.pairs:
            raise InputError(
                f"MQAR needs length >= 4 x pairs ({4 * self.pairs}), got length {self.length} with "
                f"{self.pairs} pairs"
            )
        first_key = 1 if self.layout == "zoology" else FILLER + 1
        if self.vocab // 2 - first_key < self.pairs or self.vocab - self.vocab // 2 < self.pairs:
            raise InputError(
                f"a vocabulary of {self.vocab} has too few key or value ids for {self.pairs} pairs"
            )

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(ids (T,), targets (T,)): targets[t] is the value the model should predict after
        ids[t]; -1 where nothing is asked.
        """
        if self.layout == "zoology":
            return self._sample_zoology(rng)
        return self._sample_queries_last(rng)

    def _sample_zoology(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        D, half = self.pairs, self.vocab // 2
        keys = rng.choice(np.arange(1, half), D, replace=False)  # (D,) distinct
        values = rng.choice(np.arange(half, self.vocab), D, replace=False)  # (D,) distinct
        ids = rng.integers(0, self.vocab, self.length)  # (T,) random filler everywhere
        ids[0 : 2 * D : 2], ids[1 : 2 * D : 2] = keys, values  # k1 v1 k2 v2 ...
        space = (self.length - 2 * D) // 2  # query slots: every second position after them
        gaps = rng.choice(space, D, replace=False, p=gap_probabilities(space, self.alpha))
        at = 2 * D + 2 * gaps  # (D,) where key i is asked again
        ids[at] = keys
        targets = np.full(self.length, -1)
        targets[at] = values
        return ids, targets

    def _sample_queries_last(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        keys = rng.choice(np.arange(FILLER + 1, self.vocab // 2), self.pairs, replace=False)
        values = rng.integers(self.vocab // 2, self.vocab, self.pairs)
        order = rng.permutation(self.pairs)
        context = np.stack([keys, values], 1).reshape(-1)  # k1 v1 k2 v2 ...
        # k 0 k 0 ...
        queries = np.stack([keys[order], np.full(self.pairs, ANSWER_SLOT)], 1).reshape(-1)
        filler = rng.integers(1, FILLER + 1, self.length - len(context) - len(queries))
        ids = np.concatenate([context, filler, queries])
        targets = np.full(self.length, -1)
        targets[len(context) + len(filler) :: 2] = values[order]  # at each query key: its value
        return ids, targets

    def batch(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        rows = [self.sample(rng) for _ in range(n)]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


Predictor = Callable[[np.ndarray], np.ndarray]  # (B, T) ids -> (B, T) predicted next ids


def mqar_accuracy(predict: Predictor, ids: np.ndarray, targets: np.ndarray) -> float:
    """Share of query keys after which the predicted next token is the key's value."""
    pred = predict(ids)  # (B, T)
    asked = targets >= 0
    return float((pred[asked] == targets[asked]).mean())


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
        raise InputError(
            f"length {length} is longer than the model's context of {lm.max_length} tokens"
        )


def mqar_cell_seed(seed: int, length: int, pairs: int) -> int:
    """The seed of the sequences of one (length, pairs) cell of ``mqar_grid``."""
    return seed + 7919 * length + pairs


def mqar_grid(
    lm,
    lengths,
    pairs,
    *,
    vocab: int,
    n: int = 64,
    seed: int = 0,
    layout: str = "zoology",
    alpha: float = 0.01,
    predict: Predictor | None = None,
) -> dict:
    """MQAR accuracy over ids < ``vocab`` for every (length, pairs) that fits (pairs x 4 <=
    length); None where it does not.
    """
    if not vocab <= lm.vocab_size:
        raise InputError(
            f"MQAR vocabulary {vocab} is larger than the model's vocabulary ({lm.vocab_size})"
        )
    for L in lengths:
        check_length(lm, L)
    tasks = {
        (L, D): MQAR(vocab, L, D, layout=layout, alpha=alpha)
        for L in lengths
        for D in pairs
        if 4 * D <= L
    }  # every cell checked before the first forward pass
    predict = predict or model_predictor(lm)
    grid: dict[str, float | None] = {}
    for L in lengths:
        for D in pairs:
            task = tasks.get((L, D))
            if task is None:
                grid[f"{L}x{D}"] = None
                continue
            ids, targets = task.batch(n, mqar_cell_seed(seed, L, D))
            grid[f"{L}x{D}"] = mqar_accuracy(predict, ids, targets)
    return grid


NEEDLE = "The special magic number for {key} is {value}."
QUESTION = "\nWhat is the special magic number for {key}? The special magic number for {key} is"
KEYS = (
    "Ashford",
    "Bellmont",
    "Corvale",
    "Dunmore",
    "Elmstead",
    "Fairholt",
    "Glenrock",
    "Hartwell",
    "Ivydale",
    "Junewood",
)


def niah_prompt(
    tokenizer, filler_ids: list[int], length: int, depth: float, key: str, value: str
) -> list[int]:
    """Filler tokens up to ``length`` with the needle sentence at ``depth`` (0 = start, 1 = just
    before the question).
    """
    needle = tokenizer(" " + NEEDLE.format(key=key, value=value) + " ", verbose=False)["input_ids"]
    question = tokenizer(QUESTION.format(key=key), verbose=False)["input_ids"]
    room = length - len(needle) - len(question)
    if room < 0:
        raise InputError(
            f"length {length} cannot hold the needle and the question "
            f"({len(needle) + len(question)} tokens)"
        )
    hay = (filler_ids * (room // max(1, len(filler_ids)) + 1))[:room]
    at = int(round(depth * room))
    return hay[:at] + needle + hay[at:] + question


def niah_grid(
    lm, filler_text: str, lengths, depths, *, n: int = 8, seed: int = 0, new_tokens: int = 6
) -> dict:
    """Share of needles found (the value appears in the generation) per (length, depth)."""
    from memaudit.models.generation import greedy_generate

    for L in lengths:
        check_length(lm, L + new_tokens)
    filler = lm.tokenizer(filler_text, verbose=False)["input_ids"]
    grid = {}
    for cell, (L, d, cases) in niah_cases(lengths, depths, n=n, seed=seed).items():
        prompts = [niah_prompt(lm.tokenizer, filler, L, d, k, v) for k, v in cases]
        outs = greedy_generate(lm, prompts, new_tokens)
        grid[cell] = float(np.mean([v in lm.tokenizer.decode(o) for (_, v), o in zip(cases, outs)]))
    return grid


def niah_cases(lengths, depths, *, n: int, seed: int) -> dict[str, tuple[int, float, list]]:
    """Per cell "LxD": (length, depth, n (key, four-digit value) needles)."""
    rng = random.Random(seed)
    return {
        f"{L}x{d:g}": (L, d, [(rng.choice(KEYS), str(rng.randint(1000, 9999))) for _ in range(n)])
        for L in lengths
        for d in depths
    }


def mqar_batch(tasks: list[MQAR], step: int, *, batch_size: int, seed: int, easy_steps: int = 0):
    """The training batch of ``step``: task ``step % len(tasks)`` (a mix of (length, pairs) cycles
    through its tasks, so every batch has one length and needs no padding), seeded by the seed and
    the step, so a resumed or repeated training sees the same data. The first ``easy_steps``
    steps cycle through the tasks with the fewest pairs only: a curriculum, without which a mix
    of 4 and 8 pairs kept even attention on the plateau of answering some value from the
    context (0.27 after 600 steps at width 32; 1.00 with 300 easy steps first).

    Returns (ids LongTensor (B, T), targets LongTensor (B, T), -1 where nothing is asked).
    """
    if step < easy_steps:
        fewest = min(t.pairs for t in tasks)
        tasks = [t for t in tasks if t.pairs == fewest]
    task = tasks[step % len(tasks)]
    ids, targets = task.batch(batch_size, seed * 1_000_003 + step)
    return torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(targets, dtype=torch.long)


def mqar_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the next-token logits (B, T, V) at the query keys (targets >= 0):
    position p's logits predict ``targets[p]``, the value of the key at p.
    """
    asked = targets >= 0  # (B, T)
    return torch.nn.functional.cross_entropy(logits[asked].float(), targets[asked])


def fit_mqar(
    model: torch.nn.Module,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    tasks: list[MQAR],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    easy_steps: int = 0,
    progress: Progress | None = None,
) -> dict:
    """The one MQAR training loop (``probe recall-train`` and every cell of ``probe
    recall-sweep``): AdamW without weight decay, gradients clipped at norm 1, loss at the query
    keys only; ``logits_of(ids (B, T))`` gives the model's next-token logits (B, T, V).

    Returns the training record: steps, tokens seen, seconds, tokens/s, last loss.
    """
    import time

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    tokens, loss_value, t0 = 0, float("nan"), time.perf_counter()
    for step in range(steps):
        x, targets = mqar_batch(  # (B, T) each
            tasks, step, batch_size=batch_size, seed=seed, easy_steps=easy_steps
        )
        loss = mqar_loss(logits_of(x), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += x.numel()
        loss_value = loss.item()
        if progress:
            progress("training on MQAR", step + 1, steps, f"loss {loss_value:.3f}")
    model.eval()
    seconds = time.perf_counter() - t0
    return {
        "steps": steps,
        "easy_steps": easy_steps,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "final_loss": loss_value,
    }


def train_mqar_model(
    out_dir,
    *,
    length: int = 32,
    pairs: int = 4,
    vocab: int = 64,
    layout: str = "zoology",
    alpha: float = 0.01,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    size: str = "micro",
    arch: str = "llama",
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """A small attention model trained on MQAR over ids < ``vocab`` at one length (loss at the query
    keys only).

    The model's vocabulary is exactly the task's ``vocab`` ids (``id_tokenizer``). With the
    default ``zoology`` layout (micro size, length 32, 4 pairs, 600 steps, seed 0) it reaches
    1.00 at its training cell. Measured on a CPU with the ``queries-last`` layout:
    ``arch="llama"`` (rotary positions) at lr 1e-3 reaches 1.0 for 10 of 10 seeds (at lr 3e-3,
    4 of 6; the others stay stuck even after 1500 steps). With a 512-id output vocabulary,
    ``arch="gpt2"`` (learned absolute positions), or length 64 with 8 pairs, it stayed for
    thousands of steps on the plateau of answering with some value from the context.
    """
    from memaudit.io.outdir import prepare_out_dir
    from memaudit.lab.lm import build_model, save_model_dir

    prepare_out_dir(out_dir, kind="model:mqar", overwrite=overwrite)
    tokenizer = id_tokenizer(vocab)
    model = build_model(tokenizer, size=size, context=max(256, length), seed=seed, arch=arch)
    task = MQAR(vocab, length, pairs, layout=layout, alpha=alpha)
    fit_mqar(
        model,
        lambda x: model(input_ids=x).logits,
        [task],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
    )
    model.eval()
    return save_model_dir(
        model,
        tokenizer,
        out_dir,
        kind="model:mqar",
        extra={
            "task": "mqar",
            "length": length,
            "pairs": pairs,
            "mqar_vocab": vocab,
            "layout": layout,
            "alpha": alpha,
            "steps": steps,
            "lr": lr,
            "size": size,
            "arch": arch,
            "seed": seed,
        },
    )


def id_tokenizer(vocab: int):
    """A word-level tokenizer over ``vocab`` ids: id 0 is the end-of-text token, id i > 0 is the
    word ``t<i>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from memaudit.lab.lm import EOS

    words = {EOS: 0, **{f"t{i}": i for i in range(1, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=EOS, bos_token=EOS, eos_token=EOS
    )


def mqar_training(model_dir) -> dict | None:
    """How a ``probe recall-train`` model was trained (length, pairs, mqar_vocab, ...), or None."""
    import json
    from pathlib import Path

    from .zoo_recall import is_zoo_dir, zoo_training

    if is_zoo_dir(model_dir):
        return zoo_training(model_dir)
    f = Path(model_dir) / "memaudit_train.json"
    record = json.loads(f.read_text()) if f.is_file() else {}
    return record if record.get("task") == "mqar" else None


def mqar_layout(config: RecallConfig, trained: dict | None) -> tuple[str, float]:
    """(layout, alpha): the configured ones, else those the model was trained on (a model dir
    from before layouts were recorded was trained on ``queries-last``), else Zoology's.
    """
    if trained is not None:
        trained = {"layout": "queries-last", "alpha": 0.01, **trained}
    else:
        trained = {"layout": "zoology", "alpha": 0.01}
    layout = trained["layout"] if config.layout is None else config.layout
    alpha = trained["alpha"] if config.alpha is None else config.alpha
    return layout, alpha


def run_recall(config: RecallConfig, *, progress=None):
    import time

    from memaudit.io import rundir as rs
    from memaudit.io.corpus import load_corpus
    from memaudit.models.hf import LoadOptions, load_causal_lm

    from .zoo_recall import ZooRecallModel, is_zoo_dir

    t0 = time.perf_counter()
    predict: Predictor | None = None
    lm: Any
    if is_zoo_dir(config.model):  # a zoo model: ids in, logits out, no tokenizer
        if config.task != "mqar":
            raise InputError(
                "a zoo model has no tokenizer: it takes --task mqar only", path=config.model
            )
        zoo = ZooRecallModel.load(config.model, lengths=config.lengths)
        lm, predict = zoo, zoo.predictor()
    else:
        lm = load_causal_lm(config.model, LoadOptions(device=config.device))
    run = rs.RunDir.begin(config.out, f"probe recall {config.task}", config)
    out = run.path
    trained = mqar_training(config.model)
    rows: tuple[int, ...]
    cols: tuple[int, ...] | tuple[float, ...]
    layout: str | None = None
    alpha: float | None = None
    if config.task == "mqar":
        vocab = config.vocab or (trained or {}).get("mqar_vocab") or lm.vocab_size
        layout, alpha = mqar_layout(config, trained)
        grid = mqar_grid(
            lm,
            config.lengths,
            config.pairs,
            vocab=vocab,
            n=config.n,
            seed=config.seed,
            layout=layout,
            alpha=alpha,
            predict=predict,
        )
        rows, cols, axis = config.lengths, config.pairs, "pairs"
        chance = 1 / (vocab - vocab // 2)
    else:
        vocab = None
        filler = "\n".join(load_corpus(config.filler, max_chars=200_000, seed=config.seed).docs)
        grid = niah_grid(lm, filler, config.lengths, config.depths, n=config.n, seed=config.seed)
        rows, cols, axis = config.lengths, config.depths, "depth"
        chance = None
    cells = [
        (L, c, grid[f"{L}x{c:g}" if isinstance(c, float) else f"{L}x{c}"])
        for L in rows
        for c in cols
    ]
    run.write_scores(
        {
            "length": [L for L, _, _ in cells],
            axis: [c for _, c, _ in cells],
            "accuracy": [a for _, _, a in cells],
        }
    )
    results = {
        **run.header({"target": lm}),
        "data": {"skipped": []},
        "task": config.task,
        "axis": axis,
        "grid": grid,
        "chance": chance,
        "mqar_vocab": vocab,
        "mqar_layout": layout,
        "mqar_alpha": alpha if layout == "zoology" else None,
        "trained_on": trained,
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report import write_recall_report

        render = partial(write_recall_report, rows=list(rows), cols=list(cols))
    run.finish(results, render)
    return out, results
