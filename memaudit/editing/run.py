"""``memaudit edit``: write new facts into a copy of a model with ROME, MEMIT or EMMET.

Everything is checked before ``--out`` is touched: the edits file (one ``file:line`` error per
bad line), the model, the layers (a block must have a later block, or an edit at the subject
cannot reach the answer), every edit's tokens. The key statistics of each layer come from the
cache or one pass over ``--covariance-corpus`` (:mod:`.covariance`). The edited model is a new
model dir with ``memaudit_edit.json`` (config, the original's fingerprint, the edits file's
sha256, the statistics used, one entry per weight update); the original is never written.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.corpus import load_corpus
from memaudit.io.outdir import prepare_out_dir
from memaudit.io.progress import Progress
from memaudit.lab.lm import save_model_dir, token_stream
from memaudit.models.anatomy import blocks
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.scoring.cache import default_cache_root

from .compute import TargetSettings
from .config import EditConfig
from .covariance import cache_path, check_invertible, key_moment
from .methods import EditSettings, apply_edits
from .requests import encode_edits, read_edits

EDIT_RECORD = "memaudit_edit.json"
KIND = "model:edit"


def default_layers(method: str, n_layers: int) -> tuple[int, ...]:
    """ROME: the block just before the middle (ROME's layer 17 of GPT-2 XL's 48 is early-middle);
    MEMIT / EMMET: every block from 0 to that one (MEMIT's 3-8 of GPT-J's 28)."""
    last = max(0, n_layers // 2 - 1)
    return (last,) if method == "rome" else tuple(range(last + 1))


def check_layers(layers: tuple[int, ...], n_layers: int) -> None:
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise InputError(f"--layers: block {layer} does not exist (0..{n_layers - 1})")
        if layer == n_layers - 1:
            raise InputError(
                f"--layers: block {layer} is the last; an edit at the subject's last token there "
                "cannot reach the answer's position (no later attention reads it)"
            )


def key_statistics(
    lm,
    layers: tuple[int, ...],
    *,
    corpus: str,
    tokens: int,
    cache_dir: str | None,
    seed: int,
    progress: Progress | None = None,
) -> tuple[dict[int, torch.Tensor], dict]:
    """Each layer's ``E[k k^T]`` over the first ``tokens`` tokens of ``corpus`` (from the cache
    when it holds them), checked invertible; and what results should say of them."""
    sample = load_corpus(corpus, max_chars=8 * tokens, seed=seed)
    stream = token_stream(lm.tokenizer, sample.docs)[:tokens]
    if len(stream) < 2:
        raise InputError("--covariance-corpus holds no text", path=corpus)
    root = Path(cache_dir) if cache_dir else default_cache_root()
    moments, stats = {}, []
    for i, layer in enumerate(layers):
        path = cache_path(root, fingerprint=lm.fingerprint, layer=layer, stream=stream)
        t0 = time.perf_counter()
        km = key_moment(lm.model, stream, layer, path=path)
        check_invertible(km.moment, layer)
        moments[layer] = km.moment
        stats.append(
            {"layer": layer, "tokens": km.n_tokens, "forward_passes": km.forward_passes,
             "seconds": time.perf_counter() - t0, "path": str(path)}
        )  # fmt: skip
        if progress:
            progress("key statistics", i + 1, len(layers), f"block {layer}")
    return moments, {"corpus": sample.summary(), "layers": stats}


def run_edit(config: EditConfig, *, progress: Progress | None = None) -> Path:
    """Edit ``config.model`` into ``config.out``; returns the new model dir."""
    t0 = time.perf_counter()
    edits = read_edits(config.edits)
    lm = load_causal_lm(config.model, LoadOptions(dtype="float32", device=config.device))
    model, tokenizer = lm.model, lm.tokenizer
    n_layers = len(blocks(model))
    layers = config.layers or default_layers(config.method, n_layers)
    check_layers(layers, n_layers)
    encoded = encode_edits(tokenizer, edits, key_at=config.key_at, path=config.edits)
    moments, covariance = key_statistics(
        lm,
        layers,
        corpus=config.covariance_corpus,
        tokens=config.covariance_tokens,
        cache_dir=config.cache_dir,
        seed=config.seed,
        progress=progress,
    )
    out = prepare_out_dir(
        config.out, kind=KIND, inputs=[config.model, config.edits], overwrite=config.overwrite
    )
    settings = EditSettings(
        method=config.method,
        layers=layers,
        preservation_weight=config.preservation_weight,
        emmet_ridge=config.emmet_ridge,
        target=TargetSettings(
            steps=config.v_steps,
            lr=config.v_lr,
            weight_decay=config.v_weight_decay,
            clamp_norm=config.clamp_norm,
        ),
    )

    def told(done: int, total: int) -> None:
        if progress:
            progress("editing", done, total, config.method)

    log = apply_edits(model, encoded, moments, settings, progress=told)
    record = {
        "schema_version": rs.SCHEMA_VERSION,
        "command": "edit",
        "config": config.to_dict(),
        "layers": list(layers),
        "original": {"path": str(config.model), "fingerprint": lm.fingerprint},
        "edits": {
            "path": str(config.edits),
            "sha256": hashlib.sha256(Path(config.edits).read_bytes()).hexdigest(),
            "n": len(edits),
        },
        "covariance": covariance,
        "log": log,
        "seconds": time.perf_counter() - t0,
        **rs.environment(),
    }
    text = json.dumps(rs.jsonable(record), indent=2) + "\n"
    return save_model_dir(model, tokenizer, out, kind=KIND, records={EDIT_RECORD: text})
