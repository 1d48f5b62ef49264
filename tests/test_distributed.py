"""``--engine ray`` against the local engine, on a local Ray of 2 workers: the same bytes."""

import json
import socket

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from memaudit.cli.app import app
from memaudit.index.config import IndexBuildConfig, OverlapConfig
from memaudit.lab.config import ExtractConfig
from memaudit.mia.config import MiaConfig
from memaudit.scoring import distributed
from memaudit.scoring.engine import ScoreSettings, score_texts

pytestmark = pytest.mark.usefixtures("ray_workers")
ARRAYS = ("token_ids", "logp", "mu", "sigma", "is_argmax")


@pytest.fixture(scope="module")
def ray_workers(ray_session):
    """The engine keeps its 2 workers across these tests; they go at the end, so that the
    session's Ray has its CPUs free for other tests' tasks.
    """
    yield
    distributed.release_workers()


def engine():
    return distributed.open_engine(
        "ray", address=None, workers=2, device="cpu", trust_remote_code=False
    )


def table(run_dir):
    return pq.read_table(run_dir / "scores.parquet").to_pydict()


def shards(cache_root):
    """Every cache shard's arrays, by file name (the name hashes the texts it holds)."""
    out = {}
    for path in sorted(cache_root.glob("*/shard-*.npz")):
        with np.load(path, allow_pickle=False) as z:
            out[path.name] = {k: z[k] for k in z.files}
    return out


def assert_same_shards(a, b):
    a, b = shards(a), shards(b)
    assert a and list(a) == list(b)
    for name in a:
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name}:{k}")


def counts(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "seconds"}


def test_mia_with_shadows_on_ray_equals_local(target_dir, snippets, shadows_dir, tmp_path):
    from memaudit.mia.run import run_mia

    sets = {
        name: write_jsonl(tmp_path / f"{name}.jsonl", [{"text": t} for t in snippets[name][:40]])
        for name in ("members", "nonmembers")
    }
    runs = {}
    for name in ("local", "ray"):
        config = MiaConfig(
            model=str(target_dir),
            members=str(sets["members"]),
            nonmembers=str(sets["nonmembers"]),
            attacks="loss,zlib,min_k,lowercase,lira",
            shadows=str(shadows_dir),
            shard_texts=8,
            out=str(tmp_path / name),
            cache_dir=str(tmp_path / f"cache-{name}"),
            n_bootstrap=1,
            report=False,
            device="cpu",
            **({"engine": "ray", "ray_workers": 2} if name == "ray" else {}),
        )
        runs[name] = run_mia(config).results
    assert table(tmp_path / "ray") == table(tmp_path / "local")
    assert_same_shards(tmp_path / "cache-local", tmp_path / "cache-ray")
    # every text scored once per model: the same passes, tokens and shards as the local engine
    local, ray = (runs[n]["scoring"] for n in ("local", "ray"))
    assert list(local) == list(ray) and len(local) == 5  # the target and 4 shadows
    assert all(counts(local[m]) == counts(ray[m]) for m in local)
    assert runs["ray"]["engine"] == {
        "engine": "ray",
        "address": "local",
        "workers": 2,
        "device": "cpu",
        "threads_per_worker": 1,
    }
    assert runs["ray"]["config"]["engine"] == "ray"


def test_extract_and_overlap_on_ray_equal_local(target_dir, data_files, snippets, tmp_path):
    from memaudit.index.build import build_index
    from memaudit.index.overlap import run_overlap
    from memaudit.lab.extract import run_extract

    build_index(
        IndexBuildConfig(
            corpus=str(data_files["members"]), tokenizer=str(target_dir), out=str(tmp_path / "idx")
        )
    )
    data = write_jsonl(tmp_path / "data.jsonl", [{"text": t} for t in snippets["members"][:30]])
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl", [{"text": t[:60]} for t in snippets["members"][:12]]
    )
    for name in ("local", "ray"):
        ray = {"engine": "ray", "ray_workers": 2} if name == "ray" else {}
        run_extract(
            ExtractConfig(
                model=str(target_dir),
                data=str(data),
                prefix_tokens=8,
                suffix_tokens=8,
                batch_size=8,  # 4 batches dealt out
                out=str(tmp_path / f"extract-{name}"),
                no_cache=True,  # scores come back from the workers, not through the cache
                report=False,
                device="cpu",
                **ray,
            )
        )
        for mode, sampling in (("greedy", {}), ("sampled", {"temperature": 1.0, "samples": 2})):
            run_overlap(
                OverlapConfig(
                    model=str(target_dir),
                    index=str(tmp_path / "idx"),
                    prompts=str(prompts),
                    max_new_tokens=12,
                    batch_size=4,
                    n_bootstrap=10,
                    out=str(tmp_path / f"overlap-{mode}-{name}"),
                    report=False,
                    device="cpu",
                    **sampling,
                    **ray,
                )
            )
    for run in ("extract", "overlap-greedy", "overlap-sampled"):
        local, ray = table(tmp_path / f"{run}-local"), table(tmp_path / f"{run}-ray")
        assert ray == local, run
    results = json.loads((tmp_path / "overlap-sampled-ray" / "results.json").read_text())
    assert (
        results["overlap"]
        == json.loads((tmp_path / "overlap-sampled-local" / "results.json").read_text())["overlap"]
    )


def assert_same_scores(a, b):
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.offsets, b.offsets)


def test_a_shard_that_fails_is_all_a_rerun_scores(target, snippets, tmp_path):
    texts = snippets["members"][:40] + snippets["nonmembers"][:40]
    settings = ScoreSettings(shard_texts=8)
    local, local_stats = score_texts(target, texts, settings, cache_root=tmp_path / "local")
    ids = target.encode(texts)
    longest = max(range(len(ids)), key=lambda i: (len(ids[i]), i))
    broken = [list(t) for t in ids]
    broken[longest][-1] = target.vocab_size + 7  # the last shard's worker raises
    with engine():
        with pytest.raises(IndexError):
            score_texts(target, texts, settings, cache_root=tmp_path / "ray", token_ids=broken)
        again, stats = score_texts(target, texts, settings, cache_root=tmp_path / "ray")
    assert_same_scores(again, local)
    # the shards that finished before the failure are loaded, not scored again
    assert settings.shard_texts <= stats.cached_texts < stats.unique_texts
    assert 0 < stats.tokens_scored < local_stats.tokens_scored
    assert_same_shards(tmp_path / "local", tmp_path / "ray")


def test_a_killed_worker_is_restarted_and_nothing_counted_twice(
    ray_session, target, snippets, tmp_path
):
    texts = snippets["members"][:40] + snippets["nonmembers"][:40]
    settings = ScoreSettings(shard_texts=8)
    local, local_stats = score_texts(target, texts, settings, cache_root=tmp_path / "local")
    with engine() as ray_engine:
        victim = ray_engine.workers[0]
        pid = ray_session.get(victim.ready.remote())
        kills = []

        def kill_once(stage, done, total, note=""):
            if not kills:  # after the first shard: the victim still has shards queued
                kills.append(done)
                ray_session.kill(victim, no_restart=False)

        scores, stats = score_texts(
            target, texts, settings, cache_root=tmp_path / "ray", progress=kill_once
        )
        assert kills and ray_session.get(victim.ready.remote()) != pid  # it was restarted
    assert_same_scores(scores, local)
    assert counts(stats.__dict__) == counts(local_stats.__dict__)
    assert_same_shards(tmp_path / "local", tmp_path / "ray")


def test_a_ray_address_that_does_not_answer_is_one_line_exit_2(target_dir, data_files, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        [
            "mia",
            "--model",
            str(target_dir),
            "--members",
            str(data_files["members"]),
            "--nonmembers",
            str(data_files["nonmembers"]),
            "--out",
            str(out),
            "--engine",
            "ray",
            "--ray-address",
            f"127.0.0.1:{port}",
        ],
    )
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Ray address '127.0.0.1:{port}' does not answer" in lines[0]
    assert not out.exists()
    with pytest.raises(Exception, match="need --engine ray"):
        MiaConfig(model="m", data="d", ray_workers=2)
