"""Corpus index: build throughput, count latency and build memory, against infini-gram and a scan.

    python benchmarks/bench_index.py [--sizes 10000000,100000000] [--queries 2000] [--repeats 3]

Tokens: this Python's standard library (~2.9M tokens with a 4096-token BPE trained here);
larger sizes add copies of it, each in a new document order and with 2% of tokens replaced
by unigram samples, so the corpus is not one long exact repeat. Both engines get the same
token file (ours: big-endian u16 with a separator after each document; infini-gram's
``tokenized.0``/``offset.0``: little-endian u16 with ``\\xff\\xff`` before each document).

Build: our shard stage (``index_build.sort_shard``: load tokens, libdivsufsort, write sa.npy) vs
infini-gram's ``build_sa`` (its Rust make-part / merge / concat, given all CPUs), each in a fresh
process; medians of ``--repeats`` runs; peak RSS of that process and its children (sampled, summed
over the process tree) per token. Count: median and p99 latency of the same queries (spans drawn
from the corpus, 1-16 tokens, plus 10% absent), answers checked equal; the brute-force scan (numpy,
vectorised: candidates of the first token, filtered by each next one) on a subset. Targets: build <=
1.5x infini-gram's time, count <= 2x its latency, both >= 100x faster than the scan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.index.suffix import CorpusIndex, SuffixIndex  # noqa: E402

SEP = 0xFFFF


def corpus_docs(n_tokens: int, seed: int = 0) -> list[np.ndarray]:
    from memaudit.index.build import corpus_documents
    from memaudit.io.corpus import stdlib_snippets
    from memaudit.lab.lm import train_bpe_tokenizer

    tok = train_bpe_tokenizer(stdlib_snippets(3000), vocab_size=4096)
    texts = [t for _, t in corpus_documents("stdlib")]
    base = [np.asarray(ids, dtype=np.uint16) for ids in tok(texts, verbose=False)["input_ids"]]
    unigram = np.bincount(np.concatenate(base), minlength=4096) / sum(len(d) for d in base)
    rng = np.random.default_rng(seed)
    docs, total, copy = [], 0, 0
    while total < n_tokens:
        order = range(len(base)) if copy == 0 else rng.permutation(len(base))
        for i in order:
            d = base[i].copy()
            if copy:
                hit = rng.random(len(d)) < 0.02
                d[hit] = rng.choice(4096, hit.sum(), p=unigram)
            d = d[: n_tokens - total]
            docs.append(d)
            total += len(d)
            if total >= n_tokens:
                break
        copy += 1
    return docs


def write_ours(docs, d: Path) -> None:
    d.mkdir(parents=True)
    lengths = np.array([len(x) for x in docs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
    sep = np.array([SEP], dtype=np.uint16)
    tokens = np.concatenate([y for x in docs for y in (x, sep)]).astype(">u2")
    np.save(d / "tokens.npy", tokens)
    np.save(d / "doc_starts.npy", starts)
    (d / "docs.json").write_text(json.dumps([str(i) for i in range(len(docs))]))
    (d / "tokens.json").write_text(
        json.dumps({"docs_sha256": "bench", "tokens": int(lengths.sum()), "n_docs": len(docs)})
    )


def write_infini(docs, d: Path) -> None:
    d.mkdir(parents=True)
    offsets, pos = [], 0
    with open(d / "tokenized.0", "wb") as fh:
        for x in docs:
            offsets.append(pos)
            data = b"\xff\xff" + x.astype("<u2").tobytes()
            fh.write(data)
            pos += len(data)
    np.array(offsets, dtype=np.uint64).tofile(d / "offset.0")


def build_in_child(engine: str, d: Path) -> dict:
    """One build in a fresh process: wall seconds and the peak RSS of it and its children."""
    out = subprocess.run(
        [sys.executable, __file__, "--_build", engine, str(d)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


class TreeRss(threading.Thread):
    """Peak resident memory of this process and all its descendants together, sampled every 20 ms.

    (ru_maxrss would not do: Linux carries the parent's peak into a child across fork and exec.)
    """

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, False
        self.start()

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, sum(_rss(p) for p in _tree(os.getpid())))
            time.sleep(0.02)


def _tree(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in kids:
            out += _tree(int(k))
    return out


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child_build(engine: str, d: Path) -> None:
    sampler = TreeRss()
    if engine == "ours":
        (d / "sa.npy").unlink(missing_ok=True)
        (d / "shard.json").unlink(missing_ok=True)
        from memaudit.index.build import sort_shard

        t = time.perf_counter()
        sort_shard(str(d))
    else:
        import contextlib
        import io
        from types import SimpleNamespace

        from infini_gram.indexing import build_sa

        (d / "table.0").unlink(missing_ok=True)
        args = SimpleNamespace(
            save_dir=str(d),
            temp_dir=str(d),
            worker_id=0,
            workers=1,
            shards=1,
            cpus=os.cpu_count(),
            mem=16,
            token_width=2,
        )
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            build_sa(args)
    seconds = time.perf_counter() - t
    sampler.stop = True
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": sampler.peak}))


def sample_queries(tokens: np.ndarray, n: int, rng) -> list[list[int]]:
    out = []
    while len(out) < n:
        if rng.random() < 0.1:
            out.append(rng.integers(0, 4096, 8).tolist())  # almost surely absent
            continue
        m = int(rng.integers(1, 17))
        p = int(rng.integers(0, len(tokens) - m))
        q = tokens[p : p + m].astype(np.int64)
        if (q != SEP).all():
            out.append(q.tolist())
    return out


def brute_count(tokens: np.ndarray, q: list[int]) -> int:
    cand = np.flatnonzero(tokens[: len(tokens) - len(q) + 1] == q[0])
    for j, t in enumerate(q[1:], start=1):
        cand = cand[tokens[cand + j] == t]
    return len(cand)


def timed(fn, queries) -> tuple[np.ndarray, list[int]]:
    times, answers = [], []
    for q in queries:
        t = time.perf_counter_ns()
        answers.append(fn(q))
        times.append(time.perf_counter_ns() - t)
    return np.array(times) / 1e9, answers


def bench_size(n_tokens: int, args, tmp: Path) -> dict:
    docs = corpus_docs(n_tokens)
    ours, theirs = tmp / f"ours-{n_tokens}", tmp / f"infini-{n_tokens}"
    write_ours(docs, ours)
    write_infini(docs, theirs)
    del docs
    builds = {
        e: [build_in_child(e, d) for _ in range(args.repeats)]
        for e, d in (("ours", ours), ("infini-gram", theirs))
    }
    build = {
        e: {
            "seconds": float(np.median([r["seconds"] for r in rs])),
            "tokens_per_s": n_tokens / float(np.median([r["seconds"] for r in rs])),
            "peak_bytes_per_token": max(r["peak_rss_bytes"] for r in rs) / n_tokens,
        }
        for e, rs in builds.items()
    }

    from infini_gram.engine import InfiniGramEngine

    index = CorpusIndex([SuffixIndex.load(ours)])
    engine = InfiniGramEngine(
        index_dir=str(theirs), eos_token_id=0, vocab_size=65535, token_dtype="u16"
    )
    tokens = np.load(ours / "tokens.npy").astype(np.uint16)
    queries = sample_queries(tokens, args.queries, np.random.default_rng(1))
    timed(index.count, queries[:200])  # warm the page cache for both
    timed(lambda q: engine.count(input_ids=q)["count"], queries[:200])
    t_ours, a_ours = timed(index.count, queries)
    t_ig, a_ig = timed(lambda q: engine.count(input_ids=q)["count"], queries)
    t_bf, a_bf = timed(lambda q: brute_count(tokens, q), queries[: args.brute_queries])
    if a_ours != a_ig or a_ours[: len(a_bf)] != a_bf:
        raise SystemExit("count answers differ between engines")
    lat = lambda t: {"median_s": float(np.median(t)), "p99_s": float(np.percentile(t, 99))}  # noqa: E731
    count = {
        "ours": lat(t_ours),
        "infini-gram": lat(t_ig),
        "brute_force": lat(t_bf),
        "queries": len(queries),
        "brute_queries": len(a_bf),
    }
    ratios = {
        "build_time_ours_over_infini": build["ours"]["seconds"] / build["infini-gram"]["seconds"],
        "count_median_ours_over_infini": count["ours"]["median_s"]
        / count["infini-gram"]["median_s"],
        "count_p99_ours_over_infini": count["ours"]["p99_s"] / count["infini-gram"]["p99_s"],
        "brute_over_ours_count": count["brute_force"]["median_s"] / count["ours"]["median_s"],
        "brute_over_infini_count": count["brute_force"]["median_s"]
        / count["infini-gram"]["median_s"],
    }
    return {"tokens": n_tokens, "build": build, "count": count, "ratios": ratios}


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000000,100000000")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--brute-queries", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    ap.add_argument("--_build", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._build:
        return _child_build(args._build[0], Path(args._build[1]))
    try:
        import infini_gram  # noqa: F401
    except ImportError:
        raise SystemExit(
            "this benchmark compares with infini-gram: pip install 'memaudit[bench]'"
        ) from None
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            r = bench_size(n, args, Path(tmp))
            results.append(r)
            b, c, x = r["build"], r["count"], r["ratios"]
            print(f"\n== {n:,} tokens ==")
            for e in ("ours", "infini-gram"):
                print(
                    f"build {e:<12} {b[e]['seconds']:7.2f} s  {b[e]['tokens_per_s'] / 1e6:6.2f} M "
                    f"tokens/s  peak {b[e]['peak_bytes_per_token']:5.1f} B/token"
                )
            for e in ("ours", "infini-gram", "brute_force"):
                print(
                    f"count {e:<12} median {c[e]['median_s'] * 1e6:10.1f} us  p99 "
                    f"{c[e]['p99_s'] * 1e6:10.1f} us"
                )
            print(
                f"ratios: build ours/infini-gram {x['build_time_ours_over_infini']:.2f}x (target "
                "<= 1.5), "
                f"count median ours/infini-gram {x['count_median_ours_over_infini']:.2f}x (target "
                "<= 2), "
                f"p99 {x['count_p99_ours_over_infini']:.2f}x; brute force / ours "
                f"{x['brute_over_ours_count']:.0f}x, "
                f"brute force / infini-gram {x['brute_over_infini_count']:.0f}x (target >= 100)"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
