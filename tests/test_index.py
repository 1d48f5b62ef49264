"""The corpus index against brute-force scans; sharded, resumed and Ray builds against one-piece
builds.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.index import build as index_build
from memaudit.index.build import IndexBuildConfig, build_index
from memaudit.index.suffix import CorpusIndex, SuffixIndex


def brute_count(docs, q):
    return sum(
        1 for d in docs for i in range(len(d) - len(q) + 1) if list(d[i : i + len(q)]) == list(q)
    )


def brute_locate(docs, q):
    return sorted(
        (k, i)
        for k, d in enumerate(docs)
        for i in range(len(d) - len(q) + 1)
        if list(d[i : i + len(q)]) == list(q)
    )


def brute_longest(docs, q):
    out = []
    for i in range(len(q)):
        n = 0
        while i + n < len(q) and brute_count(docs, q[i : i + n + 1]):
            n += 1
        out.append(n)
    return out


def random_docs(rng, vocab):
    return [
        rng.integers(0, vocab, int(rng.integers(0, 30))).tolist()
        for _ in range(int(rng.integers(1, 9)))
    ]


def split_index(docs, cuts) -> CorpusIndex:
    """The same documents as consecutive shards cut at ``cuts``."""
    bounds = [0, *cuts, len(docs)]
    return CorpusIndex(
        [SuffixIndex.build(docs[a:b], first_doc=a) for a, b in zip(bounds, bounds[1:]) if b > a]
    )


@pytest.mark.parametrize("seed", range(10))
def test_queries_equal_brute_force_sharded_or_not(seed, tmp_path):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(2, 6))  # a small vocabulary: many repeats
    docs = random_docs(rng, vocab)
    if seed == 9:  # ids beyond 16 bits take the 32-bit layout
        docs = [[t + 70_000 for t in d] for d in docs]
    whole = SuffixIndex.build(docs)
    if seed % 2:  # half the cases go through the on-disk format
        whole = SuffixIndex.load(whole.save(tmp_path / "idx"))
    cuts = sorted(set(rng.integers(1, len(docs), 2).tolist())) if len(docs) > 1 else []
    sharded = split_index(docs, cuts)
    assert len(whole) == len(sharded) == sum(map(len, docs))
    base = 70_000 if seed == 9 else 0
    for _ in range(40):
        q = (
            rng.integers(0, vocab + 1, int(rng.integers(1, 6))) + base
        ).tolist()  # vocab + 1: a token not in the corpus
        for index in (whole, sharded):
            assert index.count(q) == brute_count(docs, q)
            assert index.locate(q, limit=10_000) == brute_locate(docs, q)
            assert (
                index.locate(q, limit=2) == brute_locate(docs, q)[:2]
            )  # the first occurrences in corpus order
    for d in docs:  # every document's own start and end (the boundaries) are found
        if d:
            assert whole.count(d) == sharded.count(d) == brute_count(docs, d) >= 1
            assert whole.count(d[-2:]) == brute_count(docs, d[-2:])
    q = (rng.integers(0, vocab, 12) + base).tolist()
    assert whole.longest(q) == sharded.longest(q) == brute_longest(docs, q)
    assert whole.overlap(q, min_tokens=2) == sharded.overlap(q, min_tokens=2)


def test_values_outside_the_token_range_never_match():
    index = SuffixIndex.build([[1, 2, 3], [4, 5]])
    assert (
        index.count([3, 4]) == 0 and index.count([2, 3]) == 1 and index.locate([4, 5]) == [(1, 0)]
    )
    assert (
        index.count([65535]) == 0 and index.count([3, 65535]) == 0 and index.count([-1]) == 0
    )  # the separator
    assert index.longest([1, 2, 65535, 4, 5]) == [2, 1, 0, 2, 1]


def test_overlap_of_copied_and_random_text():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 5000, 400).tolist() for _ in range(20)]
    index = SuffixIndex.build(docs)
    copied = docs[7][50:150]
    o = index.overlap(copied, min_tokens=8)
    assert o["coverage"] == 1.0 and o["longest"] == 100 and o["spans"][0]["docs"] == [7]
    random = rng.integers(0, 5000, 100).tolist()
    assert index.overlap(random, min_tokens=8)["coverage"] == 0.0
    mixed = random[:50] + copied[:50]
    assert index.overlap(mixed, min_tokens=8)["coverage"] == pytest.approx(0.5, abs=0.05)


@pytest.fixture(scope="module")
def corpus_file(snippets, tmp_path_factory):
    """A JSONL corpus with repeats, for builds with a real tokenizer."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    texts = snippets["members"][:60] + snippets["members"][:5] * 3
    path.write_text(
        "".join(json.dumps({"id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return path, texts


def test_build_from_a_corpus_equals_brute_force_and_shards_agree(
    corpus_file, target_dir, target, tmp_path
):
    path, texts = corpus_file
    one = build_index(
        IndexBuildConfig(corpus=str(path), tokenizer=str(target_dir), out=str(tmp_path / "one"))
    )
    many = build_index(
        IndexBuildConfig(
            corpus=str(path),
            tokenizer=str(target_dir),
            out=str(tmp_path / "many"),
            max_shard_tokens=1500,
        )
    )
    assert len(one.shards) == 1 and len(many.shards) >= 4
    docs = target.encode(texts)
    assert len(one) == len(many) == sum(map(len, docs)) and many.n_docs == len(texts)
    assert (
        many.doc_id(61) == "doc61"
        and many.document(61) == docs[61]
        and many.document(61, 2, 5) == docs[61][2:5]
    )
    rng = np.random.default_rng(0)
    for _ in range(25):
        d = docs[int(rng.integers(0, len(docs)))]
        i, n = int(rng.integers(0, len(d) - 6)), int(rng.integers(1, 6))
        q = d[i : i + n]
        assert one.count(q) == many.count(q) == brute_count(docs, q)
        assert one.locate(q, limit=5) == many.locate(q, limit=5) == brute_locate(docs, q)[:5]
    assert one.count(docs[2]) == many.count(docs[2]) == 4  # the repeated documents
    assert one.tokenizer_fingerprint == target.tokenizer_fingerprint


def test_a_killed_build_reuses_its_finished_shards(corpus_file, target_dir, tmp_path, monkeypatch):
    path, _ = corpus_file
    cfg = IndexBuildConfig(
        corpus=str(path),
        tokenizer=str(target_dir),
        out=str(tmp_path / "idx"),
        max_shard_tokens=1500,
    )
    real_sort, sorted_dirs = index_build.suffix_array, []

    def crash_on_third(tokens):
        if len(sorted_dirs) == 2:
            raise KeyboardInterrupt  # the build is killed while sorting the third shard
        sorted_dirs.append(len(tokens))
        return real_sort(tokens)

    monkeypatch.setattr(index_build, "suffix_array", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_index(cfg)
    assert not (tmp_path / "idx" / "index.json").exists()  # unfinished, and it says so
    with pytest.raises(InputError, match="not a finished memaudit index"):
        CorpusIndex.load(tmp_path / "idx")

    encoded = []
    monkeypatch.setattr(
        index_build, "suffix_array", lambda t: (sorted_dirs.append(len(t)), real_sort(t))[1]
    )
    real_tokenize = index_build._encoded
    monkeypatch.setattr(
        index_build,
        "_encoded",
        lambda batch, enc: real_tokenize(batch, lambda texts: encoded.extend(texts) or enc(texts)),
    )
    resumed = build_index(cfg)
    assert encoded == []  # every shard's tokens were reused
    n_shards = len(resumed.shards)
    assert len(sorted_dirs) == 2 + (n_shards - 2)  # only the unsorted shards were sorted
    build_index(
        IndexBuildConfig(
            corpus=str(path),
            tokenizer=str(target_dir),
            out=str(tmp_path / "fresh"),
            max_shard_tokens=1500,
        )
    )
    for k in range(n_shards):
        for name in ("tokens.npy", "sa.npy", "doc_starts.npy", "docs.json"):
            assert (tmp_path / "idx" / f"shard-{k:05d}" / name).read_bytes() == (
                tmp_path / "fresh" / f"shard-{k:05d}" / name
            ).read_bytes()


def test_ray_build_equals_local_build(corpus_file, target_dir, tmp_path):
    pytest.importorskip("ray", reason="the 'dist' extra (installed by `make test`)")
    path, _ = corpus_file
    local = build_index(
        IndexBuildConfig(
            corpus=str(path),
            tokenizer=str(target_dir),
            out=str(tmp_path / "local"),
            max_shard_tokens=2000,
        )
    )
    ray = build_index(
        IndexBuildConfig(
            corpus=str(path),
            tokenizer=str(target_dir),
            out=str(tmp_path / "ray"),
            max_shard_tokens=2000,
            engine="ray",
            workers=2,
        )
    )
    assert len(local.shards) == len(ray.shards) >= 3
    for f in sorted((tmp_path / "local").glob("shard-*/*")):
        assert (
            f.read_bytes() == (tmp_path / "ray" / f.relative_to(tmp_path / "local")).read_bytes()
        ), f
    strip = lambda m: {k: v for k, v in m.items() if k != "build"}  # noqa: E731  (timings and engine differ)
    assert strip(local.meta) == strip(ray.meta)
    assert local.fingerprint == ray.fingerprint


def test_index_commands(corpus_file, target_dir, target, tmp_path):
    path, texts = corpus_file
    runner = CliRunner()
    idx = str(tmp_path / "idx")
    r = runner.invoke(
        app,
        [
            "index",
            "build",
            str(path),
            "--tokenizer",
            str(target_dir),
            "--out",
            idx,
            "--max-shard-tokens",
            "3000",
        ],
    )
    assert r.exit_code == 0, r.output
    ids = target.encode([texts[2]])[0][:6]
    r = runner.invoke(app, ["index", "count", idx, ",".join(map(str, ids)), "--ids"])
    assert r.exit_code == 0 and r.stdout.strip() == str(brute_count(target.encode(texts), ids))
    line = texts[2][: texts[2].index("\n", 20)]  # cut at a line end, where BPE tokens end too
    r = runner.invoke(app, ["index", "locate", idx, line, "--limit", "2"])
    assert r.exit_code == 0 and "doc2" in r.stdout
    gens = tmp_path / "gens.jsonl"
    gens.write_text(
        json.dumps({"text": texts[3]}) + "\n" + json.dumps({"text": "zq xv jk " * 20}) + "\n"
    )
    r = runner.invoke(
        app, ["index", "overlap", idx, "--texts", str(gens), "--out", str(tmp_path / "o.jsonl")]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert (
        rows[0]["coverage"] == 1.0
        and "doc3" in rows[0]["spans"][0]["sources"]
        and rows[1]["coverage"] == 0.0
    )
    r = runner.invoke(app, ["index", "count", str(tmp_path / "nowhere"), "x"])
    assert r.exit_code == 2 and "not a finished memaudit index" in r.stderr
    r = runner.invoke(
        app,
        [
            "index",
            "build",
            str(path),
            "--tokenizer",
            str(target_dir),
            "--out",
            idx,
            "--engine",
            "spark",
        ],
    )
    assert r.exit_code == 2 and "unknown engine 'spark'" in r.stderr


def test_extract_and_overlap_with_an_index(
    repeated_model, repeated_corpus, snippets, reference_dir, tmp_path
):
    model, seen = repeated_model
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(repeated_corpus)
        )
    )
    idx = tmp_path / "idx"
    build_index(IndexBuildConfig(corpus=str(corpus), tokenizer=model.name, out=str(idx)))
    data = tmp_path / "d.jsonl"
    rows = [{"id": "seen", "text": seen}, {"id": "once", "text": repeated_corpus[60]}] + [
        {"id": f"u{i}", "text": t} for i, t in enumerate(snippets["nonmembers2"][:5])
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "extract",
            "--model",
            model.name,
            "--data",
            str(data),
            "-k",
            "8",
            "-m",
            "16",
            "--index",
            str(idx),
            "--out",
            str(tmp_path / "ex"),
        ],
    )
    assert r.exit_code == 0, r.output
    by_dup = json.loads((tmp_path / "ex" / "results.json").read_text())["rates"]["by_duplication"]
    assert (
        list(by_dup) == ["0", "1", "17-64"]
        and by_dup["17-64"]["exact"]["value"] == 1.0
        and by_dup["0"]["n"] == 5
    )
    import pyarrow.parquet as pq

    counts = pq.read_table(tmp_path / "ex" / "scores.parquet").column("corpus_count").to_pylist()
    assert counts == [50, 1, 0, 0, 0, 0, 0]

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "text": t[: t.index("\n", 20)]}) + "\n"
            for i, t in enumerate([seen, *snippets["nonmembers2"][:3]])
        )
    )
    r = runner.invoke(
        app,
        [
            "overlap",
            "--model",
            model.name,
            "--index",
            str(idx),
            "--prompts",
            str(prompts),
            "--max-new-tokens",
            "24",
            "--out",
            str(tmp_path / "ov"),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ov" / "results.json").read_text())
    gens = pq.read_table(tmp_path / "ov" / "scores.parquet").to_pydict()
    assert res["index"]["fingerprint"] and res["index"]["documents"] == len(repeated_corpus)
    assert (
        gens["coverage"][0] > 0.9 and res["overlap"]["longest"]["max"] >= 20
    )  # the text seen 50 times comes back
    assert res["overlap"]["top_sources"][0]["source"] in {f"c{i}" for i in range(50)}
    assert "<mark>" in (tmp_path / "ov" / "report.html").read_text()
    docs = model.encode(
        repeated_corpus
    )  # independent check: coverage recomputed by brute force over the corpus tokens
    for gen, cov in zip(gens["generated_ids"], gens["coverage"]):
        covered = np.zeros(len(gen), bool)
        for i, n in enumerate(brute_longest(docs, gen)):
            if n >= 8:
                covered[i : i + n] = True
        assert covered.mean() == pytest.approx(cov)

    r = runner.invoke(
        app,
        ["overlap", "--model", str(reference_dir), "--index", str(idx), "--prompts", str(prompts)],
    )
    assert r.exit_code == 2 and "index was built with tokenizer" in r.stderr


def test_overlap_intervals_resample_prompts_not_their_samples():
    from memaudit.index.config import OverlapConfig
    from memaudit.index.overlap import summarize

    # 10 prompts x 5 samples; every sample of prompts 0-4 is copied, none of 5-9
    rows = []
    for p in range(10):
        for _ in range(5):
            copied = p < 5
            spans = [{"start": 0, "length": 4, "docs": []}] if copied else []
            rows.append(
                (
                    p,
                    [1, 2, 3, 4],
                    {"coverage": float(copied), "spans": spans, "longest": 4 * copied},
                    [4 * copied, 0, 0, 0],
                )
            )
    config = OverlapConfig(model="m", index="i", prompts="p", n_bootstrap=2000, seed=3)
    o = summarize(rows, None, config)
    rng = np.random.default_rng(3)  # the prompt-level bootstrap, computed directly
    per_prompt = np.array([1.0] * 5 + [0.0] * 5)
    rounds = per_prompt[rng.integers(0, 10, size=(2000, 10))].mean(axis=1)
    direct = np.percentile(rounds, [2.5, 97.5])
    for measure in ("mean_coverage", "share_with_copy"):
        assert o[measure]["value"] == 0.5
        np.testing.assert_allclose(o[measure]["ci"], direct)
    # resampling the 50 generations one by one would claim about half this width
    assert o["mean_coverage"]["ci"][1] - o["mean_coverage"]["ci"][0] > 0.45


@pytest.mark.parametrize("where", ["encoding", "writing"])
def test_a_crash_while_tokenizing_resumes_to_the_same_index(
    where, corpus_file, target_dir, tmp_path, monkeypatch
):
    path, _ = corpus_file

    def config(out):
        return IndexBuildConfig(
            corpus=str(path), tokenizer=str(target_dir), out=str(out), max_shard_tokens=1500
        )

    calls = []
    real_encoded, real_save = index_build._encoded, index_build._save_npy

    def encoded_then_crash(batch, encode):
        calls.append(len(batch))
        if where == "encoding" and len(calls) == 3:
            raise KeyboardInterrupt  # killed inside the tokenize stage
        return real_encoded(batch, encode)

    def save_then_crash(dest, array):
        real_save(dest, array)
        if where == "writing" and dest.name == "doc_starts.npy" and "00001" in str(dest):
            raise KeyboardInterrupt  # a shard's tokens are on disk, its record is not

    monkeypatch.setattr(index_build, "_encoded", encoded_then_crash)
    monkeypatch.setattr(index_build, "_save_npy", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(config(tmp_path / "idx"))
    assert not (tmp_path / "idx" / "index.json").exists()
    monkeypatch.setattr(index_build, "_encoded", real_encoded)
    monkeypatch.setattr(index_build, "_save_npy", real_save)
    resumed = build_index(config(tmp_path / "idx"))
    fresh = build_index(config(tmp_path / "fresh"))
    assert len(resumed.shards) == len(fresh.shards) and len(resumed) == len(fresh)
    for k in range(len(fresh.shards)):
        for name in ("tokens.npy", "sa.npy", "doc_starts.npy", "docs.json"):
            assert (tmp_path / "idx" / f"shard-{k:05d}" / name).read_bytes() == (
                tmp_path / "fresh" / f"shard-{k:05d}" / name
            ).read_bytes()
