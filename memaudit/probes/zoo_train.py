"""Zoo models on MQAR: train one (``probe recall-train --arch <zoo name>``), and read one back
for ``probe recall``.

``--arch llama`` and ``--arch gpt2`` keep meaning the transformers micro models of
``train_mqar_model``; every other name is a mixer of ``memaudit.probes.zoo`` (``MIXERS``),
trained with the same MQAR batches, loss and optimizer (``recall.fit_mqar``) and saved with
``save_zoo_model``, the training record in the dir's ``memaudit_train.json`` as the
transformers models keep it, so ``probe recall`` reads the vocabulary and layout from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from memaudit.io.progress import Progress

from .config import check_zoo_arch
from .recall import MQAR, fit_mqar


def zoo_config(
    arch: str,
    *,
    vocab: int,
    d_model: int,
    state: int | None,
    n_layers: int,
    max_len: int,
    flag: str = "--arch",
):
    """A checked ``ZooConfig``: an unknown arch (did you mean) or a state the arch cannot have is
    one ``InputError`` line, before anything is written.
    """
    from .zoo import ZooConfig

    check_zoo_arch(arch, flag=flag)
    cfg = ZooConfig(
        arch=arch, vocab=vocab, d_model=d_model, n_layers=n_layers, max_len=max_len, state=state
    )
    cfg.check()
    return cfg


@contextmanager
def one_thread() -> Iterator[None]:
    """Train on one torch thread (the numbers then do not depend on how many a worker has)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_zoo_mqar(
    cfg,
    tasks: list[MQAR],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: Progress | None = None,
):
    """(ZooLM, training record): a freshly initialised ``ZooLM(cfg)`` (seeded) trained on the
    ``tasks`` mix by ``fit_mqar``, the first half of the steps on the tasks with the fewest pairs
    (``recall.mqar_batch``'s curriculum; a single task is unaffected).
    """
    from .zoo import ZooLM

    torch.manual_seed(seed)
    model = ZooLM(cfg)
    record = fit_mqar(
        model,
        model,
        tasks,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        easy_steps=steps // 2,
        progress=progress,
    )
    record["parameters"] = sum(p.numel() for p in model.parameters())
    return model, record


def train_zoo_mqar_model(
    out_dir,
    *,
    arch: str,
    d_model: int,
    state: int | None,
    n_layers: int = 2,
    length: int = 32,
    pairs: int = 4,
    vocab: int = 64,
    layout: str = "zoology",
    alpha: float = 0.01,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """``probe recall-train`` for a zoo arch: one model trained on MQAR at one (length, pairs),
    saved with ``save_zoo_model``; every input is checked before ``out_dir`` is touched.
    """
    from memaudit.io.outdir import prepare_out_dir

    from .zoo import save_zoo_model

    cfg = zoo_config(
        arch,
        vocab=vocab,
        d_model=d_model,
        state=state,
        n_layers=n_layers,
        max_len=max(256, length),
    )
    task = MQAR(vocab, length, pairs, layout=layout, alpha=alpha)
    prepare_out_dir(out_dir, kind="model:zoo", overwrite=overwrite)
    with one_thread():
        model, record = fit_zoo_mqar(
            cfg, [task], steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
        )
    extra = {
        **mqar_record(length=length, pairs=pairs, vocab=vocab, layout=layout, alpha=alpha),
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "arch": arch,
        "d_model": d_model,
        "state": state,
        "n_layers": n_layers,
        "seed": seed,
        "training": record,
    }
    return save_zoo_model(model, out_dir, extra=extra, overwrite=overwrite)


def mqar_record(*, length: int, pairs: int, vocab: int, layout: str, alpha: float) -> dict:
    """The fields ``probe recall`` reads from a model's training record (``mqar_training``)."""
    return {
        "task": "mqar",
        "length": length,
        "pairs": pairs,
        "mqar_vocab": vocab,
        "layout": layout,
        "alpha": alpha,
    }
