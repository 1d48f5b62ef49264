"""Byte index vs BPE index, batched queries vs a process per query, and contamination at scale.

    python benchmarks/bench_contamination.py [--corpus-mb 100] [--queries 1000]
        [--process-queries 30] [--items 10000] [--out bench-contamination.json]

Corpus: this Python's standard library as documents, repeated (each copy in a new document
order, 2% of its lines swapped for lines of other documents, so it is not one exact repeat)
up to ``--corpus-mb`` megabytes of UTF-8. Both indexes are built from the same JSONL file
with ``build_index``: ``--tokenizer bytes`` and a 4096-token BPE trained here.

1. Build: seconds (tokenize, sort), corpus MB per second, and bytes on disk per corpus byte
   (every shard file), for each index.
2. Batched counts: ``memaudit index count IDX --queries FILE`` (one process, ``--queries``
   spans drawn from the corpus) against ``memaudit index count IDX QUERY`` run once per query
   (``--process-queries`` of them, timed and scaled to ``--queries``); ratio = per-process
   time / batched time (target >= 20x). In-process too: ``count_many`` vs a loop of ``count``.
3. Contamination: ``find_contaminated`` over ``--items`` stdlib snippets (half drawn from
   the corpus documents, half perturbed so they are not) against each index; seconds.

Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.index.build import IndexBuildConfig, build_index, corpus_documents  # noqa: E402
from memaudit.index.contamination import find_contaminated  # noqa: E402

MEMAUDIT = [sys.executable, "-m", "memaudit"]


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> list[str]:
    """The stdlib documents repeated to ``megabytes`` MB; returns the first copy's texts (as
    written: all in the corpus).
    """
    base = [t for _, t in corpus_documents("stdlib")]
    lines = [ln for t in base for ln in t.splitlines(keepends=True)]
    rng = np.random.default_rng(seed)
    budget, copy, size = int(megabytes * 1e6), 0, 0
    first: list[str] = []
    with open(path, "w") as fh:
        while size < budget:
            order = range(len(base)) if copy == 0 else rng.permutation(len(base))
            for i in order:
                text = base[i]
                if copy:
                    own = text.splitlines(keepends=True)
                    swap = rng.random(len(own)) < 0.02
                    own = [lines[rng.integers(len(lines))] if s else ln for ln, s in zip(own, swap)]
                    text = "".join(own)
                text = text[: budget - size]
                if copy == 0:
                    first.append(text)
                fh.write(json.dumps({"id": f"c{copy}-{i}", "text": text}) + "\n")
                size += len(text.encode())
                if size >= budget:
                    break
            copy += 1
    return [t for t in first if len(t) > 400]


def tokenizer_dir(root: Path) -> Path:
    from memaudit.io.corpus import stdlib_snippets
    from memaudit.lab.lm import train_bpe_tokenizer

    out = root / "bpe-tokenizer"
    train_bpe_tokenizer(stdlib_snippets(3000), vocab_size=4096).save_pretrained(out)
    return out


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build(corpus: Path, tokenizer: str, out: Path, corpus_bytes: int) -> tuple[object, dict]:
    t = time.perf_counter()
    index = build_index(IndexBuildConfig(corpus=str(corpus), tokenizer=tokenizer, out=str(out)))
    seconds = time.perf_counter() - t
    shards = sum(disk_bytes(out / e["dir"]) for e in index.meta["shards"])
    return index, {
        "tokens": len(index),
        "seconds": seconds,
        "phases": index.meta["build"]["seconds"],
        "corpus_mb_per_s": corpus_bytes / 1e6 / seconds,
        "disk_bytes_per_corpus_byte": shards / corpus_bytes,
        "corpus_bytes_per_token": corpus_bytes / len(index),
    }


def query_texts(base: list[str], n: int, seed: int = 1) -> list[str]:
    """Spans of 1-6 words cut from the corpus (at word starts), and 10% that are absent."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        words = base[int(rng.integers(len(base)))].split(" ")
        if len(words) < 8:
            continue
        i = int(rng.integers(len(words) - 6))
        span = " " + " ".join(words[i : i + int(rng.integers(1, 7))])
        if span.strip() and "\n" not in span and not span.startswith(" -"):
            out.append(span if rng.random() > 0.1 else span + " zqxv")
    return out


def batched_vs_processes(idx: Path, index, queries: list[str], k: int, tmp: Path) -> dict:
    qfile = tmp / "queries.txt"
    qfile.write_text("".join(q + "\n" for q in queries))
    env = {**os.environ, "COLUMNS": "200"}
    t = time.perf_counter()
    batched = subprocess.run(
        [*MEMAUDIT, "index", "count", str(idx), "--queries", str(qfile)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    t_batch = time.perf_counter() - t
    rows = [json.loads(line) for line in batched.stdout.splitlines()]
    t = time.perf_counter()
    for q, row in zip(queries[:k], rows):
        one = subprocess.run(
            [*MEMAUDIT, "index", "count", str(idx), q],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert int(one.stdout.strip()) == row["count"], (q, one.stdout, row)
    per_process = (time.perf_counter() - t) / k
    encoded = index.encode(queries)
    t = time.perf_counter()
    many = index.count_many(encoded)
    t_many = time.perf_counter() - t
    t = time.perf_counter()
    loop = [index.count(q) for q in encoded]
    t_loop = time.perf_counter() - t
    assert many.tolist() == loop
    return {
        "queries": len(queries),
        "batched_process_s": t_batch,
        "one_process_per_query_s": per_process * len(queries),
        "per_process_s": per_process,
        "ratio": per_process * len(queries) / t_batch,
        "in_process": {"count_many_s": t_many, "count_loop_s": t_loop, "ratio": t_loop / t_many},
    }


def benchmark_items(base: list[str], n: int, seed: int = 2) -> list[dict]:
    """Half cut from corpus documents (~300 characters), half with every line's words shuffled."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        text = base[int(rng.integers(len(base)))]
        start = int(rng.integers(max(1, len(text) - 300)))
        snippet = text[start : start + 300]
        if k % 2:
            words = snippet.split()
            rng.shuffle(words)
            snippet = " ".join(words)
        items.append({"id": f"item{k}", "text": snippet if snippet.strip() else "empty item"})
    return items


def contamination(index, items: list[dict]) -> dict:
    t = time.perf_counter()
    rows = find_contaminated(index, items)
    seconds = time.perf_counter() - t
    return {
        "items": len(items),
        "seconds": seconds,
        "contaminated": sum(r.contaminated for r in rows),
        "cut_from_corpus": len(items) - len(items) // 2,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-mb", type=float, default=100.0)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--process-queries", type=int, default=30)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        corpus = tmp / "corpus.jsonl"
        base = write_corpus(corpus, args.corpus_mb)
        corpus_bytes = sum(len(json.loads(line)["text"].encode()) for line in open(corpus))
        tok = tokenizer_dir(tmp)
        byte_index, byte_build = build(corpus, "bytes", tmp / "idx-bytes", corpus_bytes)
        bpe_index, bpe_build = build(corpus, str(tok), tmp / "idx-bpe", corpus_bytes)
        queries = query_texts(base, args.queries)
        k = min(args.process_queries, len(queries))
        items = benchmark_items(base, args.items)
        result = {
            "corpus_bytes": corpus_bytes,
            "build": {"bytes": byte_build, "bpe": bpe_build},
            "batched_count": {
                "bytes": batched_vs_processes(tmp / "idx-bytes", byte_index, queries, k, tmp),
                "bpe": batched_vs_processes(tmp / "idx-bpe", bpe_index, queries, k, tmp),
            },
            "contamination": {
                "bytes": contamination(byte_index, items),
                "bpe": contamination(bpe_index, items),
            },
            "cpus": os.cpu_count(),
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
