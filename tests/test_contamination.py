"""Benchmark contamination, the byte index and batched queries, against brute-force scans and
the model's own forward pass and generation.
"""

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.index import suffix
from memaudit.index.build import IndexBuildConfig, build_index
from memaudit.index.contamination import find_contaminated
from memaudit.index.duplication import open_index_for
from memaudit.index.suffix import CorpusIndex, SuffixIndex
from memaudit.models.generation import greedy_generate

NON_ASCII = [
    "Grüße aus Köln: Straße, Übermut, ähnlich. 日本語のテキストも少し。",
    "naïve café — résumé; 日本語 and ünïcödé again, Straße",
    "emoji 🙂 and more 🙂🙂, ελληνικά γράμματα, кириллица тоже",
]


def brute_count(docs, q):
    m = len(q)
    return sum(1 for d in docs for i in range(len(d) - m + 1) if list(d[i : i + m]) == list(q))


def brute_longest(docs, q):
    grams = {tuple(d[i : i + m]) for d in docs for m in range(1, 40) for i in range(len(d) - m + 1)}
    out = []
    for i in range(len(q)):
        n = 0
        while i + n < len(q) and tuple(q[i : i + n + 1]) in grams:
            n += 1
        out.append(n)
    return out


def write_corpus(path, texts):
    path.write_text(
        "".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


@pytest.fixture(scope="module")
def corpus(snippets, tmp_path_factory):
    """A corpus of 40 member snippets and the non-ASCII texts; items copied from it and a
    disjoint set.
    """
    root = tmp_path_factory.mktemp("contam")
    texts = snippets["members"][:40] + NON_ASCII
    return {"root": root, "path": write_corpus(root / "corpus.jsonl", texts), "texts": texts}


@pytest.fixture(scope="module")
def byte_index(corpus):
    out = corpus["root"] / "bytes"
    config = IndexBuildConfig(
        corpus=str(corpus["path"]), tokenizer="bytes", out=str(out), max_shard_tokens=4000
    )
    return build_index(config)


@pytest.fixture(scope="module")
def bpe_index(corpus, target_dir):
    out = corpus["root"] / "bpe"
    return build_index(
        IndexBuildConfig(corpus=str(corpus["path"]), tokenizer=str(target_dir), out=str(out))
    )


@pytest.mark.parametrize("dtype", [None, "u1"])
def test_batched_queries_equal_one_by_one_and_brute_force(dtype, monkeypatch):
    monkeypatch.setattr(suffix, "LONGEST_WIDTH", 3)  # matches longer than it: widened windows
    rng = np.random.default_rng(0)
    for _ in range(8):
        docs = [rng.integers(0, 6, int(rng.integers(0, 25))).tolist() for _ in range(5)]
        index = CorpusIndex(
            [
                SuffixIndex.build(docs[:2], dtype=dtype),
                SuffixIndex.build(docs[2:], first_doc=2, dtype=dtype),
            ]
        )
        queries = [rng.integers(-1, 7, int(rng.integers(0, 7))).tolist() for _ in range(30)]
        queries += [d[3:9] for d in docs if len(d) > 9]
        counts = index.count_many(queries).tolist()
        assert counts == [index.count(q) for q in queries]
        assert counts == [brute_count(docs, q) if q else 0 for q in queries]
        longest = index.longest_many(queries)
        assert longest == [index.longest(q) for q in queries]
        assert longest == [brute_longest(docs, q) for q in queries]


def test_byte_index_counts_equal_str_count_over_documents(byte_index, corpus):
    texts = corpus["texts"]
    assert byte_index.is_bytes and len(byte_index.shards) >= 3
    assert len(byte_index) == sum(len(t.encode()) for t in texts)
    rng = np.random.default_rng(1)
    queries = ["Straße", "日本語", "🙂", "ü", "def ", " self", "Köln: St", "zzqx"]
    for _ in range(20):
        t = texts[int(rng.integers(0, len(texts)))]
        i = int(rng.integers(0, len(t) - 8))
        queries.append(t[i : i + int(rng.integers(1, 8))])
    # the end of one document and the start of the next: never one match
    queries += [texts[k][-6:] + texts[k + 1][:6] for k in range(len(texts) - 1)]
    encoded = byte_index.encode(queries)
    counts = byte_index.count_many(encoded).tolist()
    for q, c, ids in zip(queries, counts, encoded):
        overlapping = sum(len(re.findall(f"(?={re.escape(q)})", t)) for t in texts)
        assert c == overlapping == byte_index.count(ids), q
    for q in ("Straße", "日本語", "🙂", "ελληνικά"):
        assert byte_index.count(byte_index.encode([q])[0]) == sum(t.count(q) for t in texts)
    assert all(c == 0 for c in counts[-(len(texts) - 1) :])
    assert byte_index.longest_many(encoded) == [byte_index.longest(ids) for ids in encoded]


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_ngram_overlap_equals_a_brute_force_scan(kind, byte_index, bpe_index, corpus, snippets):
    index = byte_index if kind == "bytes" else bpe_index
    n = 20 if kind == "bytes" else 6
    docs = index.encode(corpus["texts"])
    grams = {tuple(d[i : i + n]) for d in docs for i in range(len(d) - n + 1)}
    copied = snippets["members"][:5]
    half = [t[: len(t) // 2] + s[len(s) // 2 :] for t, s in zip(copied, snippets["nonmembers"])]
    items = copied + half + snippets["nonmembers"][5:10] + [NON_ASCII[0][5:40]]
    rows = find_contaminated(index, items, ngram=n, threshold=0.5)
    for row, ids in zip(rows, index.encode(items)):
        found = [tuple(ids[i : i + n]) in grams for i in range(len(ids) - n + 1)]
        assert row.ngrams == len(found) and row.found == sum(found)
        assert row.share == pytest.approx(np.mean(found))
        assert row.longest == max(index.longest(list(ids)))
        assert row.contaminated == (sum(found) > 0 and np.mean(found) >= 0.5)
    assert [r.contaminated for r in rows[:5]] == [True] * 5
    assert all(f"doc{i}" in rows[i].docs for i in range(5))


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_flags_exactly_the_copied_items(kind, byte_index, bpe_index, snippets):
    index = byte_index if kind == "bytes" else bpe_index
    copied = [{"id": f"in{i}", "text": t} for i, t in enumerate(snippets["members"][:40])]
    disjoint = [{"id": f"out{i}", "text": t} for i, t in enumerate(snippets["nonmembers"][:40])]
    rows = find_contaminated(index, copied + disjoint)  # the default n and threshold
    assert [r.id for r in rows if r.contaminated] == [d["id"] for d in copied]
    # any n-gram (GPT-3's rule) still flags no disjoint item here
    rows = find_contaminated(index, copied + disjoint, threshold=0.0)
    assert sum(r.contaminated for r in rows[40:]) <= 2  # shared boilerplate lines, at most


def test_dirty_clean_split_with_a_model(bpe_index, corpus, snippets, target_dir, target, tmp_path):
    """Items cut from the model's training texts (in the corpus) vs from texts it never saw; the
    run's accuracy and NLL equal the model's own greedy generation and forward pass.
    """
    tok = target.tokenizer
    items = []
    for k, t in enumerate(snippets["members"][:10] + snippets["nonmembers"][:10]):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        question, answer = tok.decode(ids[:24]), tok.decode(ids[24:26])
        items.append({"id": f"q{k}", "question": question, "answer": answer})
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps(it) + "\n" for it in items))
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        [
            "contamination",
            *("--benchmark", str(bench), "--index", str(corpus["root"] / "bpe")),
            *("--model", str(target_dir), "--out", str(out), "--answer-separator", ""),
            *("--n-bootstrap", "50", "--ngram", "8"),
        ],
    )
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    table = pq.read_table(out / "scores.parquet").to_pylist()
    results = json.loads((out / "results.json").read_text())
    assert [row["contaminated"] for row in table] == [True] * 10 + [False] * 10
    prompts = target.encode([it["question"] for it in items])
    answers = tok([it["answer"] for it in items], add_special_tokens=False)["input_ids"]
    generated = greedy_generate(target, prompts, 2)
    for row, p, a, g in zip(table, prompts, answers, generated):
        assert row["correct"] == (list(g[: len(a)]) == list(a))
        ids = torch.tensor([list(p) + list(a)])
        with torch.no_grad():
            logp = torch.log_softmax(target.model(ids).logits[0].double(), -1)
        want = -np.mean([logp[len(p) - 1 + j, t].item() for j, t in enumerate(a)])
        assert row["answer_nll"] == pytest.approx(want, abs=1e-3)
    a = results["answers"]
    dirty = np.array([row["correct"] for row in table[:10]], dtype=float)
    clean = np.array([row["correct"] for row in table[10:]], dtype=float)
    assert a["accuracy_difference"]["value"] == pytest.approx(dirty.mean() - clean.mean())
    # the model saw the dirty items' texts: their answers are likelier and no less often exact
    assert a["dirty"]["answer_nll"]["value"] < a["clean"]["answer_nll"]["value"]
    assert a["dirty"]["accuracy"]["value"] >= a["clean"]["accuracy"]["value"]
    lo, hi = a["accuracy_difference"]["ci"]
    assert lo <= a["accuracy_difference"]["value"] <= hi
    assert "dirty vs clean" in (out / "report.html").read_text().lower()


def test_batched_query_commands(byte_index, corpus, tmp_path):
    runner = CliRunner()
    idx = str(corpus["root"] / "bytes")
    queries = ["Straße", "日本語", "zzqx", "def "]
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(queries) + "\n")
    r = runner.invoke(app, ["index", "count", idx, "--queries", str(qfile)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["count"] for row in rows] == [
        sum(t.count(q) for t in corpus["texts"]) for q in queries
    ]
    for q in queries:  # one process per query answers the same
        single = runner.invoke(app, ["index", "count", idx, q])
        assert single.stdout.strip() == str(rows[queries.index(q)]["count"])
    out = tmp_path / "longest.parquet"
    r = runner.invoke(app, ["index", "longest", idx, "--queries", str(qfile), "--out", str(out)])
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq

    got = pq.read_table(out).to_pylist()
    assert [g["longest"] for g in got] == [byte_index.longest(list(q.encode())) for q in queries]
    r = runner.invoke(app, ["index", "count", idx, "x", "--queries", str(qfile)])
    assert r.exit_code == 2 and "one of the two" in r.stderr


def test_bad_input_is_one_line_and_writes_nothing(byte_index, bpe_index, corpus, target, tmp_path):
    runner = CliRunner()
    idx = str(corpus["root"] / "bytes")
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"id": "a", "text": "fine text here"}\n{"id": "b", "answer": "x"}\n')
    out = tmp_path / "run"
    args = ["contamination", "--benchmark", str(bench), "--index", idx, "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and f"{bench}:2" in r.stderr and "no text" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    bench.write_text('{"text": "short"}\n{"question": "tiny", "answer": "x"}\n')
    r = runner.invoke(app, args + ["--ngram", "13"])
    assert r.exit_code == 2 and "larger than every item" in r.stderr and not out.exists()
    # a byte index is no index of the model's token ids, and says so
    with pytest.raises(InputError, match="byte index"):
        open_index_for(idx, target)
    with pytest.raises(InputError, match="no tokenizer"):
        byte_index.tokenizer()
    # a BPE index tokenizes the items with its own tokenizer, whatever model is given
    assert bpe_index.encode(["def f"]) == [target.tokenizer("def f")["input_ids"]]
    with pytest.raises(InputError, match=r"items\[1\]: no text"):
        find_contaminated(byte_index, ["ok text", {"answer": "x"}])
