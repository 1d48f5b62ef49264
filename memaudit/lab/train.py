"""``memaudit train``: a small GPT-2 trained from scratch with canaries inserted at known counts.

The out dir becomes a standard model dir (safetensors + tokenizer) plus ``ledger.jsonl``
(the input ledger with every insertion's step, row and offset) and ``memaudit_train.json``
(the whole config, versions, losses), which is written last: its presence means the run
finished. A run killed midway resumes from its last checkpoint when started again with the
same config and gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.io.corpus import Corpus, load_corpus
from memaudit.io.outdir import prepare_out_dir
from memaudit.io.progress import Progress
from memaudit.models.checkpoints import (
    checkpoint_identity,
    list_checkpoints,
    resume_from_checkpoint,
    save_checkpoint,
)
from memaudit.models.hf import LoadOptions, resolve_device

from .canaries import read_ledger, with_insertions, write_ledger
from .config import TrainConfig
from .insertion import Schedule, canary_tokens, plan_insertions
from .lm import (
    EOS,
    build_model,
    fit,
    make_optimizer,
    token_stream,
    train_bpe_tokenizer,
)

TRAIN_RECORD = "memaudit_train.json"
TOKENIZER_RECORD = "memaudit_tokenizer.json"  # what the tokenizer here was trained from
CHECKPOINT = "checkpoint-"  # out/checkpoint-0000050/: weights, AdamW state, step, identity


def run_train(config: TrainConfig, *, progress: Progress | None = None) -> Path:
    """Train (or resume, or return at once if this exact run already finished) and write the
    model dir.
    """
    out = Path(config.out)
    inputs = [config.corpus, config.ledger, config.init_from]
    device = resolve_device(config.device)
    prepare_out_dir(out, kind="model:train", inputs=inputs, overwrite=config.overwrite)
    canaries = read_ledger(config.ledger) if config.ledger else []
    corpus = load_corpus(
        config.corpus,
        max_chars=config.corpus_chars,
        seed=config.seed,
        skip_invalid=config.skip_invalid,
    )
    inputs_of_run = identity_inputs(config, corpus)
    identity = _digest(inputs_of_run)
    if _settle_earlier_run(out, identity, overwrite=config.overwrite):
        return out
    docs = corpus.docs
    t0 = time.perf_counter()
    tokenizer, model = _tokenizer_and_model(config, out, docs, inputs_of_run)
    model.to(device)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    tokens = canary_tokens(tokenizer, [c for c in canaries if c.member], eos_id)
    plan = plan_insertions(
        canaries,
        tokens,
        steps=config.steps,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        seed=config.seed,
    )
    stream = token_stream(tokenizer, docs)
    schedule = Schedule(
        stream,
        steps=config.steps,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        insertions=plan,
        tokens=tokens,
    )

    optimizer = make_optimizer(model, config.settings())
    start = resume_from_checkpoint(out, CHECKPOINT, model, optimizer, identity=identity, owner=out)
    if start and progress is not None:
        progress("training", start, config.steps, f"resumed from the checkpoint of step {start}")
    losses = []

    def on_step(step, loss):
        losses.append(loss)
        if progress is not None:
            progress("training", step, config.steps, f"loss {loss:.3f}")

    fit(
        model,
        schedule.batch,
        config.settings(),
        optimizer=optimizer,
        start_step=start,
        on_step=on_step,
        checkpoint=partial(
            save_checkpoint,
            out,
            CHECKPOINT,
            model=model,
            optimizer=optimizer,
            identity=identity,
            keep_older=False,
        ),
        checkpoint_every=config.checkpoint_every,
    )
    _write_model(out, model, tokenizer, tokenizer_from=config.tokenizer)
    by_canary: dict[str, list[dict]] = {}
    for ins in plan:
        by_canary.setdefault(ins.canary, []).append(ins.to_dict())
    if canaries:
        write_ledger(out / "ledger.jsonl", with_insertions(canaries, by_canary))
    record = {
        "schema_version": rs.SCHEMA_VERSION,
        "command": "train",
        "config": asdict(config),
        "identity": identity,
        "identity_inputs": inputs_of_run,
        **rs.environment(),
        "corpus": {**corpus.summary(), "tokens": int(len(stream))},
        "insertions": len(plan),
        "tokens_trained": config.steps * config.batch_size * config.seq_len,
        "resumed_from_step": start,
        "final_loss": losses[-1] if losses else None,
        "losses_this_session": losses,
        "seconds_this_session": time.perf_counter() - t0,
    }
    write_text_atomic(out / TRAIN_RECORD, json.dumps(rs.jsonable(record), indent=2) + "\n")
    for old in [*out.glob(f"{CHECKPOINT}*"), *out.glob(f".{CHECKPOINT}*.tmp")]:
        shutil.rmtree(old, ignore_errors=True)
    return out


def identity_inputs(config: TrainConfig, corpus: Corpus) -> dict[str, Any]:
    """Everything that decides the weights, by content: the settings that shape training, the
    documents as read, the ledger's bytes, the starting model's weights and tokenizer.

    Paths are not in it (a renamed corpus is the same run; an edited one is not), nor is what
    leaves the result unchanged: the device, the checkpoint interval, ``--overwrite``, and
    ``--skip-invalid`` (its effect is in the documents).
    """
    not_identity = {"out", "overwrite", "device", "checkpoint_every", "skip_invalid", "tokenizer"}
    settings = {k: v for k, v in asdict(config).items() if k not in not_identity}
    ledger = hashlib.sha256(Path(config.ledger).read_bytes()).hexdigest() if config.ledger else None
    from memaudit.models.hf import model_fingerprint, tokenizer_fingerprint

    start = given_tokenizer = None
    if config.init_from:
        base = _model_dir(config.init_from, "--init-from")
        start = {"weights": model_fingerprint(base), "tokenizer": tokenizer_fingerprint(base)}
    if config.tokenizer:
        given_tokenizer = tokenizer_fingerprint(_model_dir(config.tokenizer, "--tokenizer"))
    return {
        **settings,
        "corpus": corpus.digest(),
        "ledger": ledger,
        "init_from": start,
        "tokenizer": given_tokenizer,
    }


def _model_dir(path: str, flag: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file() and flag == "--init-from":
        raise InputError(f"{flag}: not a model dir (no config.json)", path=path)
    if flag == "--tokenizer" and not any(
        (p / n).is_file() for n in ("tokenizer.json", "vocab.json")
    ):
        raise InputError(f"{flag}: no tokenizer files in this dir", path=path)
    return p


def stored_identity(out: str | Path) -> str | None:
    """The identity of the (finished or checkpointed) run in ``out``, if any."""
    out = Path(out)
    if (out / TRAIN_RECORD).is_file():
        return json.loads((out / TRAIN_RECORD).read_text()).get("identity")
    return checkpoint_identity(out, CHECKPOINT)


def _digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _settle_earlier_run(out: Path, identity: str, *, overwrite: bool) -> bool:
    """Whether ``out`` already holds this exact run, finished.

    A run of other settings or data is an error, or with ``overwrite`` is set aside: its
    record and checkpoints (memaudit's own files) are removed and training starts over.
    """
    stored = stored_identity(out)
    if stored is None or stored == identity:
        return stored is not None and (out / TRAIN_RECORD).is_file()
    state = "finished" if (out / TRAIN_RECORD).is_file() else "unfinished"
    if not overwrite:
        raise InputError(
            f"holds a {state} training run with other settings or data; choose another --out, "
            "or pass --overwrite to train anew",
            path=str(out),
        )
    (out / TRAIN_RECORD).unlink(missing_ok=True)
    (out / TOKENIZER_RECORD).unlink(missing_ok=True)
    for _, old in list_checkpoints(out, CHECKPOINT):
        shutil.rmtree(old)
    return False


def _tokenizer_and_model(config: TrainConfig, out: Path, docs: list[str], inputs: dict[str, Any]):
    """The tokenizer (reused from the out dir when it was made from the same data and settings)
    and a fresh or loaded model.
    """
    if config.init_from:
        from memaudit.models.hf import load_causal_lm

        base = load_causal_lm(config.init_from, LoadOptions(dtype="float32", device=config.device))
        model, tokenizer = base.model.float().train(), base.tokenizer
        return tokenizer, model
    from transformers import AutoTokenizer

    made_from = _digest({"corpus": inputs["corpus"], "vocab_size": config.vocab_size})
    if config.tokenizer:  # its files, copied as they are: the same tokenizer, byte for byte
        from memaudit.models.hf import TOKENIZER_FILES

        out.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (Path(config.tokenizer) / name).is_file():
                shutil.copy2(Path(config.tokenizer) / name, out / name)
        tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    elif _stored_tokenizer(out) == made_from:
        tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    else:
        sample, total = [], 0
        for d in docs:  # a few MB is plenty to learn the merges
            sample.append(d)
            total += len(d)
            if total > 3_000_000:
                break
        tokenizer = train_bpe_tokenizer(sample, vocab_size=config.vocab_size)
        out.mkdir(parents=True, exist_ok=True)
        (out / TOKENIZER_RECORD).unlink(missing_ok=True)  # never beside a half-saved tokenizer
        tokenizer.save_pretrained(out)
        write_text_atomic(out / TOKENIZER_RECORD, json.dumps({"made_from": made_from}) + "\n")
    return tokenizer, build_model(
        tokenizer, size=config.model_size, context=config.context, seed=config.seed
    )


def _stored_tokenizer(out: Path) -> str | None:
    """What the tokenizer in ``out`` was made from, or None when there is none (or no record)."""
    if not (out / "tokenizer.json").is_file() or not (out / TOKENIZER_RECORD).is_file():
        return None
    try:
        return json.loads((out / TOKENIZER_RECORD).read_text()).get("made_from")
    except ValueError:
        return None


def _write_model(out: Path, model, tokenizer, *, tokenizer_from: str | None = None) -> None:
    """The final weights and tokenizer, each file written whole (save to a temp dir, then move
    in).
    """
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer_from:  # a given tokenizer's own files, so its fingerprint stays the same
        from memaudit.models.hf import TOKENIZER_FILES

        for name in TOKENIZER_FILES:
            if (Path(tokenizer_from) / name).is_file():
                shutil.copy2(Path(tokenizer_from) / name, tmp / name)
    else:
        tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        f.replace(out / f.name)
    tmp.rmdir()
