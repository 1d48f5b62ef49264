"""``memaudit index build``: tokenize a corpus into shards, then sort each shard's suffixes.

Stage 1 streams the documents, tokenizes them in batches with the model's tokenizer (or,
with ``--tokenizer bytes``, takes their UTF-8 bytes) and
closes a shard whenever it reaches its token budget (set by a memory budget): the shard's
``tokens.npy``, ``doc_starts.npy`` and ``docs.json``, then ``tokens.json`` last. Stage 2
builds each shard's suffix array (``sa.npy``, then ``shard.json`` last), one shard at a time
here or as parallel Ray tasks (``engine="ray"``); both run the same function on the same
files, so their output is identical. ``index.json`` is written last of all.

A rebuild after a crash reuses what is finished: a shard whose ``tokens.json`` records the
same documents (a hash of their texts) and settings is not tokenized again, and one with a
matching ``shard.json`` is not sorted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io.atomic import write_text_atomic
from memaudit.io.outdir import prepare_out_dir
from memaudit.io.progress import Progress

from .config import IndexBuildConfig
from .suffix import (
    BYTE_DTYPE,
    BYTES,
    BYTES_FINGERPRINT,
    CorpusIndex,
    SuffixIndex,
    suffix_array,
    token_dtype,
    utf8,
    write_index_meta,
)

# Peak bytes per token of a shard's build (token array + libdivsufsort's byte suffix array +
# the aligned copy), by token width; measured by benchmarks/bench_index.py.


def build_index(config: IndexBuildConfig, *, progress: Progress | None = None) -> CorpusIndex:
    """Tokenize ``config.corpus`` and index it under ``config.out``; returns the opened index."""
    tokenizer, encode, described = _encoder(config)
    dtype = BYTE_DTYPE if tokenizer is None else token_dtype(described["vocab_size"] - 1)
    inputs = [config.corpus] + ([] if tokenizer is None else [config.tokenizer])
    root = prepare_out_dir(config.out, kind="index", inputs=inputs, overwrite=config.overwrite)
    (root / "index.json").unlink(missing_ok=True)  # the index is unfinished until the end
    identity = {
        "corpus": config.corpus,
        "tokenizer": described["fingerprint"],
        "dtype": dtype.str,
        "shard_tokens": config.shard_tokens(dtype.itemsize),
    }
    t0 = time.perf_counter()
    skipped: list = []
    entries = tokenize_shards(
        corpus_documents(config.corpus, skip_invalid=config.skip_invalid, skipped=skipped),
        encode,
        root,
        identity=identity,
        batch_docs=config.batch_docs,
        progress=progress,
    )
    t1 = time.perf_counter()
    dirs = [root / e["dir"] for e in entries]
    if config.engine == "ray":
        sort_shards_ray(dirs, workers=config.workers, address=config.ray_address, progress=progress)
    else:
        for i, d in enumerate(dirs):
            sort_shard(str(d))
            if progress:
                progress("sorting suffixes", i + 1, len(dirs))
    if tokenizer is None:
        shutil.rmtree(root / "tokenizer", ignore_errors=True)  # an earlier build's, if any
    else:
        _save_tokenizer(tokenizer, root / "tokenizer")
    meta = {
        "tokenizer": described,
        "corpus": config.corpus,
        "dtype": dtype.str,
        "tokens": sum(e["tokens"] for e in entries),
        "documents": sum(e["n_docs"] for e in entries),
        "shards": entries,
        "skipped": [s.to_dict() for s in skipped],
        "build": {
            "config": asdict(config),
            "seconds": {"tokenize": t1 - t0, "sort": time.perf_counter() - t1},
            **_versions(),
        },
    }
    write_index_meta(root, meta)
    return CorpusIndex.load(root)


def _encoder(config: IndexBuildConfig):
    """(tokenizer or None, encode texts -> token sequences, the index's tokenizer entry)."""
    if config.tokenizer == BYTES:
        described = {"path": BYTES, "fingerprint": BYTES_FINGERPRINT, "vocab_size": 256}
        return (
            None,
            lambda texts: [np.frombuffer(utf8(t), dtype=np.uint8) for t in texts],
            described,
        )
    from memaudit.models.hf import load_tokenizer, tokenizer_fingerprint

    tokenizer = load_tokenizer(config.tokenizer, trust_remote_code=config.trust_remote_code)
    described = {
        "path": config.tokenizer,
        "fingerprint": tokenizer_fingerprint(Path(config.tokenizer)),
        "vocab_size": len(tokenizer),
    }
    return tokenizer, lambda texts: tokenizer(list(texts), verbose=False)["input_ids"], described


def corpus_documents(
    spec: str, *, skip_invalid: bool = False, skipped: list | None = None
) -> Iterator[tuple[str, str]]:
    """(source id, text) of every document: ``"stdlib"`` (one per module file, sorted), a
    folder, JSONL, txt or parquet.
    """
    if spec == "stdlib":
        import sysconfig

        from memaudit.io.corpus import stdlib_files

        root = Path(sysconfig.get_paths()["stdlib"])
        for f in stdlib_files():
            text = f.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                yield str(f.relative_to(root)), text
        return
    from memaudit.io.texts import iter_texts

    for r in iter_texts(spec, skip_invalid=skip_invalid, skipped=skipped):
        yield r.id, r.text


def tokenize_shards(
    docs, encode, root: Path, *, identity: dict, batch_docs: int, progress: Progress | None = None
) -> list[dict]:
    """Stage 1: cut the document stream into shards of at most ``identity["shard_tokens"]``
    tokens.
    """
    stream = _Pushback(docs)
    budget, dtype = identity["shard_tokens"], np.dtype(identity["dtype"])
    entries: list[dict] = []
    first_doc = n_tokens = 0
    while stream.has_more():
        shard_dir = root / f"shard-{len(entries):05d}"
        entry = _reuse_tokens(shard_dir, stream, identity)
        if entry is None:
            _remove_shards_from(root, len(entries))  # this one and every later one are stale
            entry = _tokenize_one(shard_dir, stream, encode, budget, dtype, batch_docs, identity)
        entry = {"dir": shard_dir.name, "first_doc": first_doc, **entry}
        entries.append(entry)
        first_doc += entry["n_docs"]
        n_tokens += entry["tokens"]
        if progress:
            progress("tokenizing", first_doc, None, f"{n_tokens:,} tokens, {len(entries)} shard(s)")
    if not entries:
        raise InputError("the corpus holds no text", path=identity["corpus"])
    _remove_shards_from(root, len(entries))  # leftovers of an earlier, longer build
    return entries


def _tokenize_one(
    shard_dir: Path,
    stream: _Pushback,
    encode,
    budget: int,
    dtype,
    batch_docs: int,
    identity: dict,
) -> dict:
    ids: list[str] = []
    arrays: list[np.ndarray] = []
    digest, size, full = hashlib.sha256(), 0, False
    while not full and stream.has_more():
        batch = _encoded(stream.take(batch_docs), encode)
        for n_used, (doc_id, text, toks) in enumerate(batch):
            if (
                arrays and size + len(toks) + 1 > budget
            ):  # the shard is full: give the rest back, tokens and all
                stream.push_back(batch[n_used:])
                full = True
                break
            ids.append(doc_id)
            arrays.append(np.asarray(toks, dtype=dtype))
            _hash_doc(digest, text)
            size += len(toks) + 1
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    doc_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    sep = np.array([np.iinfo(dtype).max], dtype=dtype)
    tokens = np.concatenate([x for a in arrays for x in (a, sep)]).astype(
        dtype
    )  # concatenate drops the byte order
    shard = SuffixIndex(tokens, np.zeros(0, dtype=np.int32), doc_starts)
    shard_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tokens", "doc_starts"):
        _save_npy(shard_dir / f"{name}.npy", getattr(shard, name))
    write_text_atomic(shard_dir / "docs.json", json.dumps(ids))
    entry = {"n_docs": len(ids), "tokens": int(lengths.sum()), "docs_sha256": digest.hexdigest()}
    write_text_atomic(
        shard_dir / "tokens.json", json.dumps({"identity": identity, **entry}, indent=2)
    )
    return entry


def _encoded(batch: list[tuple], encode) -> list[tuple]:
    """(id, text, tokens) for every item; items given back by a full shard keep their tokens."""
    todo = [i for i, item in enumerate(batch) if len(item) == 2]
    out = list(batch)
    for i, toks in zip(todo, encode([batch[i][1] for i in todo]) if todo else []):
        out[i] = (*batch[i], toks)
    return out


def _reuse_tokens(shard_dir: Path, stream: _Pushback, identity: dict) -> dict | None:
    done = _read_json(shard_dir / "tokens.json")
    if not done or done.get("identity") != identity:
        return None
    batch = stream.take(done["n_docs"])
    digest = hashlib.sha256()
    for item in batch:
        _hash_doc(digest, item[1])
    if len(batch) == done["n_docs"] and digest.hexdigest() == done["docs_sha256"]:
        return {k: done[k] for k in ("n_docs", "tokens", "docs_sha256")}
    stream.push_back(batch)  # the corpus changed: tokenize these documents again
    return None


def sort_shard(shard_dir: str) -> dict:
    """Stage 2 for one shard: its suffix array, then ``shard.json``. Skipped when already done.

    A plain function of a path, so that it runs the same in this process and as a Ray task.
    """
    d = Path(shard_dir)
    stage1 = json.loads((d / "tokens.json").read_text())
    done = _read_json(d / "shard.json")
    if done and done.get("docs_sha256") == stage1["docs_sha256"] and (d / "sa.npy").is_file():
        return done
    tokens = np.load(d / "tokens.npy", allow_pickle=False)
    _save_npy(d / "sa.npy", suffix_array(tokens))
    info = {
        "docs_sha256": stage1["docs_sha256"],
        "tokens": stage1["tokens"],
        "n_docs": stage1["n_docs"],
    }
    write_text_atomic(d / "shard.json", json.dumps(info, indent=2))
    return info


def sort_shards_ray(
    dirs: list[Path], *, workers: int, address: str | None, progress: Progress | None = None
) -> None:
    """Stage 2 as Ray tasks, one per shard (a cluster at ``address``, or a local Ray of
    ``workers`` CPUs).
    """
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'memaudit[dist]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs = (
            {"address": address} if address else {"num_cpus": workers, "_temp_dir": _ray_temp_dir()}
        )
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
    try:
        task = ray.remote(num_cpus=1)(sort_shard)
        pending = [task.remote(str(d.resolve())) for d in dirs]
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)  # re-raises a task's error here
            done += 1
            if progress:
                progress("sorting suffixes", done, len(dirs))
    finally:
        if started:
            ray.shutdown()


def _ray_temp_dir() -> str:
    """Ray's session files: $RAY_TMPDIR when set (tests point it at a folder they own)."""
    path = os.environ.get("RAY_TMPDIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "memaudit", "ray"
    )
    os.makedirs(path, exist_ok=True)
    return os.path.abspath(path)


class _Pushback:
    """An iterator that can take a batch and give part of it back."""

    def __init__(self, items):
        self._it, self._back = iter(items), []

    def has_more(self) -> bool:
        if not self._back:
            self._back = list(_first(self._it))
        return bool(self._back)

    def take(self, n: int) -> list:
        out, self._back = self._back[:n], self._back[n:]
        while len(out) < n:
            nxt = list(_first(self._it))
            if not nxt:
                break
            out += nxt
        return out

    def push_back(self, items: list) -> None:
        self._back = list(items) + self._back


def _first(it):
    for x in it:
        yield x
        return


def _hash_doc(digest, text: str) -> None:
    data = text.encode("utf-8", errors="surrogatepass")
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def _remove_shards_from(root: Path, k: int) -> None:
    for d in sorted(root.glob("shard-*")):
        if d.is_dir() and d.name[6:].isdigit() and int(d.name[6:]) >= k:
            shutil.rmtree(d)


def _save_tokenizer(tokenizer, dest: Path) -> None:
    """A copy beside the index, so that text queries need no model directory."""
    shutil.rmtree(dest, ignore_errors=True)
    tokenizer.save_pretrained(dest)


def _save_npy(path: Path, array: np.ndarray) -> None:
    from memaudit.io.atomic import atomic_output

    with atomic_output(path) as fh:
        np.save(fh, array, allow_pickle=False)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _versions() -> dict:
    import pydivsufsort

    from memaudit.version import __version__

    return {
        "memaudit": __version__,
        "pydivsufsort": getattr(pydivsufsort, "__version__", "unknown"),
    }
