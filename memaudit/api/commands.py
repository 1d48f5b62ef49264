"""One function per command, called as the command line calls it.

Each function builds the command's own config class from its arguments (``build_config``:
the checks the flags get, then the class's own), hands in-memory texts and models to the
command's own runner under their names (``models.sources.Sources``), and reads the run dir
back as a :class:`~memaudit.api.result.Result`. Settings not named in a signature are the
config class's fields, by name (``n_bootstrap=200``): ``memaudit <command> --help`` lists
them, with ``_`` for ``-``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .inputs import Given, build_config
from .progress import progress_of
from .result import ModelDir, Result

Texts = Any  # a path, a list of strings or dicts, a pandas DataFrame or a pyarrow Table
ModelArg = Any  # a local model dir, or a transformers model (then give its tokenizer too)
ProgressArg = bool | Callable[..., None]


def mia(
    *,
    model: ModelArg,
    members: Texts = None,
    nonmembers: Texts = None,
    data: Texts = None,
    tokenizer: Any = None,
    reference: ModelArg = None,
    reference_tokenizer: Any = None,
    attacks: str = "all",
    out: str | os.PathLike | None = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> Result:
    """Membership inference (``memaudit mia``): every selected attack on members vs non-members.

    Parameters
    ----------
    model, tokenizer
        The target: a local model dir, or a transformers causal LM and its tokenizer.
    members, nonmembers
        The two sets: paths, lists of strings or dicts (a ``text`` field), or tables with a
        ``text`` column. Or ``data``: one labelled set (``label_field``, ``pair_fields``).
    reference, reference_tokenizer
        The reference model of the ``reference`` attack, as ``model``.
    attacks
        ``"all"`` or a comma list (``"loss,zlib,min_k:k=0.1"``).
    out
        The run dir; by default a new one under the system's temp dir (``Result.save`` copies it).
    progress
        True: tqdm bars; a callable ``(stage, done, total, note)``; False: nothing printed.
    **settings
        Any other field of :class:`memaudit.mia.config.MiaConfig` (``n_bootstrap=200``).

    Returns
    -------
    Result
        ``metrics`` per attack (AUC, TPR@FPR with 95% CIs), ``scores`` (scores.parquet).
    """
    from memaudit.mia.config import MiaConfig
    from memaudit.mia.run import run_mia

    given = Given()
    values = {
        "model": given.model_of("model", model, tokenizer),
        "reference": given.model_of("reference", reference, reference_tokenizer),
        "members": given.texts_of("members", members),
        "nonmembers": given.texts_of("nonmembers", nonmembers),
        "data": given.texts_of("data", data),
        "attacks": attacks,
        "out": _out(out, "mia"),
    }
    config = build_config(MiaConfig, "mia", values, settings)
    outcome = _with_progress(progress, run_mia, config, sources=given.sources())
    return Result.read("mia", outcome.out_dir, config)


def extract(
    *,
    model: ModelArg,
    data: Texts,
    tokenizer: Any = None,
    out: str | os.PathLike | None = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> Result:
    """Verbatim extraction (``memaudit extract``): greedy decoding from each text's first
    ``prefix_tokens`` tokens, compared with its next ``suffix_tokens``.

    ``model``, ``tokenizer``, ``data``, ``out``, ``progress`` as in :func:`mia`; other
    settings: the fields of :class:`memaudit.lab.config.ExtractConfig`. ``metrics``: the
    exact / loose / token-match rates with Wilson intervals.
    """
    from memaudit.lab.config import ExtractConfig
    from memaudit.lab.extract import run_extract

    given = Given()
    values = {
        "model": given.model_of("model", model, tokenizer),
        "data": given.texts_of("data", data),
        "out": _out(out, "extract"),
    }
    config = build_config(ExtractConfig, "extract", values, settings)
    outcome = _with_progress(progress, run_extract, config, sources=given.sources())
    return Result.read("extract", outcome.out_dir, config)


def dataset_inference(
    *,
    model: ModelArg,
    suspect: Texts,
    validation: Texts,
    tokenizer: Any = None,
    reference: ModelArg = None,
    reference_tokenizer: Any = None,
    out: str | os.PathLike | None = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> Result:
    """Dataset inference (``memaudit dataset-inference``): was ``suspect`` trained on? A
    p-value against ``validation`` (at least 10 texts each).

    Arguments as in :func:`mia`; other settings: the fields of
    :class:`memaudit.mia.config.DatasetInferenceConfig`. ``metrics``: p-value and verdict.
    """
    from memaudit.mia.config import DatasetInferenceConfig
    from memaudit.mia.dataset_inference import run_dataset_inference

    given = Given()
    values = {
        "model": given.model_of("model", model, tokenizer),
        "reference": given.model_of("reference", reference, reference_tokenizer),
        "suspect": given.texts_of("suspect", suspect),
        "validation": given.texts_of("validation", validation),
        "out": _out(out, "dataset-inference"),
    }
    config = build_config(DatasetInferenceConfig, "dataset-inference", values, settings)
    _with_progress(progress, run_dataset_inference, config, sources=given.sources())
    return Result.read("dataset-inference", Path(config.out), config)


def overlap(
    *,
    model: ModelArg,
    index: str | os.PathLike,
    prompts: Texts,
    tokenizer: Any = None,
    out: str | os.PathLike | None = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> Result:
    """Verbatim overlap with a corpus index (``memaudit overlap``): generate from each prompt
    and measure the spans copied from the corpus the index holds (:func:`index_build`).

    Other settings: the fields of :class:`memaudit.index.config.OverlapConfig`.
    """
    from memaudit.index.config import OverlapConfig
    from memaudit.index.overlap import run_overlap

    given = Given()
    values = {
        "model": given.model_of("model", model, tokenizer),
        "index": os.fspath(index),
        "prompts": given.texts_of("prompts", prompts),
        "out": _out(out, "overlap"),
    }
    config = build_config(OverlapConfig, "overlap", values, settings)
    outcome = _with_progress(progress, run_overlap, config, sources=given.sources())
    return Result.read("overlap", outcome.out_dir, config)


def train(
    *,
    corpus: str | os.PathLike,
    out: str | os.PathLike | None = None,
    ledger: str | os.PathLike | None = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> ModelDir:
    """Train a small GPT-2-style model from scratch (``memaudit train``), with the canaries of
    ``ledger`` inserted at known counts and times.

    ``corpus``: ``"stdlib"`` (this Python's standard library), a folder, .jsonl, .txt or
    .parquet. Other settings: the fields of :class:`memaudit.lab.config.TrainConfig`
    (``model_size="micro"``, ``steps``, ``corpus_chars`` ...). Returns the model dir.
    """
    from memaudit.lab.config import TrainConfig
    from memaudit.lab.train import TRAIN_RECORD, run_train

    values = {
        "corpus": os.fspath(corpus),
        "ledger": None if ledger is None else os.fspath(ledger),
        "out": _out(out, "train", leaf="model"),
    }
    config = build_config(TrainConfig, "train", values, settings)
    path = _with_progress(progress, run_train, config)
    return ModelDir("train", path, config, json.loads((path / TRAIN_RECORD).read_text()))


def unlearn(
    *,
    model: str | os.PathLike,
    forget: Texts,
    out: str | os.PathLike | None = None,
    holdout: Texts = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> ModelDir:
    """Remove ``forget`` from the model dir ``model`` into a new model dir
    (``memaudit unlearn``).

    ``forget`` and ``holdout`` as the texts of :func:`mia`; ``retain`` (a path or
    ``"stdlib"``), ``method``, ``steps`` ...: the fields of
    :class:`memaudit.unlearn.config.UnlearnConfig`. Returns the unlearned model dir.
    """
    from memaudit.unlearn.config import UnlearnConfig
    from memaudit.unlearn.run import UNLEARN_RECORD, run_unlearn

    given = Given()
    values = {
        "model": os.fspath(model),
        "forget": given.texts_of("forget", forget),
        "holdout": given.texts_of("holdout", holdout),
        "out": _out(out, "unlearn", leaf="model"),
    }
    config = build_config(UnlearnConfig, "unlearn", values, settings)
    path = _with_progress(progress, run_unlearn, config, sources=given.sources())
    return ModelDir("unlearn", path, config, json.loads((path / UNLEARN_RECORD).read_text()))


def unlearn_eval(
    *,
    original: str | os.PathLike,
    forget: Texts,
    holdout: Texts,
    retain: str | os.PathLike,
    unlearned: tuple[str | os.PathLike | ModelDir, ...] | list = (),
    out: str | os.PathLike | None = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> Result:
    """Is it gone? (``memaudit unlearn-eval``): extraction, MIA, retain cost, relearning and
    quantization attacks for the original and every unlearned model dir.

    ``unlearned``: model dirs (or what :func:`unlearn` returned). Other settings: the fields
    of :class:`memaudit.unlearn.config.UnlearnEvalConfig`. ``metrics``: per model.
    """
    from memaudit.unlearn.config import UnlearnEvalConfig
    from memaudit.unlearn.evaluate import run_unlearn_eval

    given = Given()
    values = {
        "original": os.fspath(original),
        "forget": given.texts_of("forget", forget),
        "holdout": given.texts_of("holdout", holdout),
        "retain": os.fspath(retain),
        "unlearned": tuple(_dir_of(u) for u in unlearned) or None,
        "out": _out(out, "unlearn-eval"),
    }
    config = build_config(UnlearnEvalConfig, "unlearn-eval", values, settings)
    path, _ = _with_progress(progress, run_unlearn_eval, config, sources=given.sources())
    return Result.read("unlearn-eval", path, config)


def index_build(
    *,
    corpus: str | os.PathLike,
    tokenizer: str | os.PathLike,
    out: str | os.PathLike | None = None,
    progress: ProgressArg = False,
    **settings: Any,
) -> Any:
    """Build a suffix-array index of ``corpus`` under ``tokenizer`` (a model or tokenizer dir)
    (``memaudit index build``); returns the opened :class:`memaudit.index.suffix.CorpusIndex`
    (its dir: ``.root``). Other settings: the fields of
    :class:`memaudit.index.config.IndexBuildConfig`.
    """
    from memaudit.index.build import build_index
    from memaudit.index.config import IndexBuildConfig

    values = {
        "corpus": os.fspath(corpus),
        "tokenizer": os.fspath(tokenizer),
        "out": _out(out, "index", leaf="index"),
    }
    config = build_config(IndexBuildConfig, "index build", values, settings)
    return _with_progress(progress, build_index, config)


def canaries_make(*, out: str | os.PathLike | None = None, **settings: Any) -> Path:
    """Make canaries and their never-inserted twins (``memaudit canaries make``); returns the
    ledger's path, for :func:`train`'s ``ledger``. Settings: the fields of
    :class:`memaudit.lab.config.CanaryMakeConfig` (``repetitions``, ``per_level`` ...).
    """
    from memaudit.lab.canaries import make_canaries, write_ledger
    from memaudit.lab.config import CanaryMakeConfig

    values = {"out": os.fspath(out) if out is not None else _out(None, "canaries", "ledger.jsonl")}
    cfg = build_config(CanaryMakeConfig, "canaries make", values, settings)
    made = make_canaries(
        repetitions=cfg.repetitions,
        per_level=cfg.per_level,
        templates=cfg.templates,
        policy=cfg.policy,
        seed=cfg.seed,
    )
    return write_ledger(cfg.out, made)


def canaries_split(
    *,
    ledger: str | os.PathLike,
    forget: str | os.PathLike,
    holdout: str | os.PathLike,
    min_repetitions: int | None = None,
) -> tuple[Path, Path]:
    """Split a ledger into a forget set (inserted canaries) and a holdout (their twins)
    (``memaudit canaries split``); returns the two JSONL paths.
    """
    from memaudit.lab.canaries import read_ledger, split_ledger, write_texts_with_prefix
    from memaudit.lab.config import CanarySplitConfig

    values = {
        "ledger": os.fspath(ledger),
        "forget": os.fspath(forget),
        "holdout": os.fspath(holdout),
        "min_repetitions": min_repetitions,
    }
    cfg = build_config(CanarySplitConfig, "canaries split", values, {})
    kept, twins = split_ledger(read_ledger(cfg.ledger), min_repetitions=cfg.min_repetitions)
    write_texts_with_prefix(cfg.forget, kept)
    write_texts_with_prefix(cfg.holdout, twins)
    return Path(cfg.forget), Path(cfg.holdout)


def _dir_of(model: str | os.PathLike | ModelDir) -> str:
    return os.fspath(model.path if isinstance(model, ModelDir) else model)


def _out(out: str | os.PathLike | None, command: str, leaf: str = "run") -> str:
    """``out``, or a new path under the system's temp dir (the dir itself is made by the run,
    under the ``--out`` rules).
    """
    if out is not None:
        return os.fspath(out)
    return str(Path(tempfile.mkdtemp(prefix=f"memaudit-{command}-")) / leaf)


def _with_progress(progress: ProgressArg, runner: Callable[..., Any], config: Any, **kw: Any):
    callback, close = progress_of(progress)
    try:
        return runner(config, progress=callback, **kw)
    finally:
        close()
