"""The gold standard: the same model trained from scratch without the forget set.

Reads the original's ``memaudit_train.json`` (written by ``memaudit train``), turns forgotten
canaries into never-inserted ones in a copy of its ledger, drops corpus documents equal to a
forget text, copies the original's tokenizer, and runs the same trainer with the same
settings and seed. A finished retrain with the same settings is reused.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from memaudit.errors import InputError
from memaudit.io.corpus import load_corpus
from memaudit.io.outdir import prepare_out_dir
from memaudit.io.texts import write_texts
from memaudit.lab.canaries import read_ledger, write_ledger
from memaudit.lab.train import TRAIN_RECORD, TrainConfig, run_train


def retrain_config(original: str | Path, forget_texts: list[str], work: Path) -> TrainConfig:
    """The original's training config with the forget set taken out (new ledger/corpus files
    under ``work``).
    """
    src = Path(original)
    record_path = src / TRAIN_RECORD
    if not record_path.is_file():
        raise InputError(
            f"no {TRAIN_RECORD}: the original was not trained by `memaudit train`, so it cannot be "
            "retrained; pass --retrained DIR",
            path=str(src),
        )
    cfg = TrainConfig(**json.loads(record_path.read_text())["config"])
    if cfg.init_from:
        raise InputError(
            "the original continued another model (--init-from); retrain that chain yourself and "
            "pass --retrained DIR",
            path=str(src),
        )
    forget = set(forget_texts)
    work.mkdir(parents=True, exist_ok=True)
    changes: dict = {"out": str(work / "retrained")}
    if cfg.ledger:
        ledger = read_ledger(
            src / "ledger.jsonl" if (src / "ledger.jsonl").is_file() else cfg.ledger
        )
        kept = [
            replace(c, member=False, repetitions=0, insertions=[])
            if c.member and c.text in forget
            else replace(c, insertions=[])
            for c in ledger
        ]
        changes["ledger"] = str(write_ledger(work / "retrain-ledger.jsonl", kept))
    docs = load_corpus(
        cfg.corpus, max_chars=cfg.corpus_chars, seed=cfg.seed, skip_invalid=cfg.skip_invalid
    ).docs
    kept_docs = [d for d in docs if d not in forget]
    if len(kept_docs) < len(docs):
        changes["corpus"] = str(
            write_texts(
                work / "retrain-corpus.jsonl", ((f"doc{i}", d) for i, d in enumerate(kept_docs))
            )
        )
        changes["corpus_chars"] = None
    return replace(cfg, **changes)


def retrain_without(
    original: str | Path, forget_texts: list[str], work: Path, *, progress=None
) -> Path:
    """Train the retrained model into ``work/retrained`` (reused when already done) and return
    its dir.
    """
    cfg = retrain_config(original, forget_texts, work)
    prepare_out_dir(cfg.out, kind="model:train", inputs=[original])
    # the original's own tokenizer, so the two models are compared on the same tokens
    return run_train(replace(cfg, tokenizer=str(original)), progress=progress)
