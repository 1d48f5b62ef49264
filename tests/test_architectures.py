"""Every common causal-LM architecture through memaudit, against the model's own forward and
``generate``: tiny random-initialised configs (memaudit.lab.archs), fp32, seeded.

Scoring, greedy extraction, ``mia``, ``extract``, ``unlearn`` and ``unlearn-eval`` run on
each; the BOS rule (``--bos``) is checked on a tokenizer that adds a BOS (Llama's
convention) and on one that does not (GPT-2's).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.io.texts import write_texts
from memaudit.lab.archs import ARCHITECTURES, save_arch_dir
from memaudit.lab.config import ExtractConfig
from memaudit.lab.extract import run_extract
from memaudit.lab.lm import train_bpe_tokenizer
from memaudit.mia.config import MiaConfig
from memaudit.mia.run import run_mia
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import HFCausalLM, LoadOptions, load_causal_lm
from memaudit.scoring.engine import ScoreSettings, score_texts
from memaudit.unlearn.config import UnlearnConfig, UnlearnEvalConfig
from memaudit.unlearn.evaluate import run_unlearn_eval
from memaudit.unlearn.run import run_unlearn

# Mamba's configs name no context length: memaudit assumes one, with a warning
pytestmark = pytest.mark.filterwarnings("ignore:.*names no context length")

FULL_LOGITS = {"granite"}  # logits not a plain projection: scored from the full logits
NEW = 10  # tokens decoded: a cache that goes wrong after a few steps shows
LENGTHS = (40, 80, 130, 180, 240, 300)  # characters: texts of 15 to 120 tokens, one batch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Models 32 wide gain nothing from threads; on a shared machine their spin-waits cost
    tens of times the work. The module's tests run on one, then the count is restored.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def arch_root(snippets, tmp_path_factory) -> Path:
    """One model dir per architecture, sharing a 400-token byte-level BPE tokenizer."""
    root = tmp_path_factory.mktemp("archs")
    tokenizer = train_bpe_tokenizer(snippets["tokenizer"][:200], vocab_size=400)
    for arch in ARCHITECTURES:
        save_arch_dir(arch, tokenizer, root / arch)
    return root


@pytest.fixture(scope="session")
def arch_model(arch_root):
    """``arch_model(name, bos)``: the loaded adapter (loaded once per name and rule)."""

    @cache
    def load(arch: str, bos: str = "auto") -> HFCausalLM:
        return load_causal_lm(arch_root / arch, LoadOptions(device="cpu", bos=bos))

    return load


@pytest.fixture(scope="session")
def arch_texts(snippets) -> list[str]:
    return [t[:n] for t, n in zip(snippets["nonmembers2"], LENGTHS)]


@pytest.fixture(scope="session")
def arch_files(snippets, tmp_path_factory) -> dict[str, Path]:
    """Small member / non-member / forget / holdout / retain sets."""
    root = tmp_path_factory.mktemp("arch-data")
    pick = {
        "members": snippets["members"][:6],
        "nonmembers": snippets["nonmembers"][:6],
        "forget": snippets["members"][6:10],
        "holdout": snippets["nonmembers"][6:10],
        "retain": snippets["reference_corpus"][:12],
    }
    return {
        name: write_texts(
            root / f"{name}.jsonl", ((f"{name}{i}", t[:300]) for i, t in enumerate(ts))
        )
        for name, ts in pick.items()
    }


def direct_stats(model, ids: list[int]) -> tuple[np.ndarray, ...]:
    """logp, mu, sigma of tokens 1.. from the model's own full logits, in float64, one text."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, :-1].double()  # (T-1, V)
    lp = torch.log_softmax(logits, -1)
    p = lp.exp()
    mu = (p * lp).sum(-1)
    sigma = (p * (lp - mu[:, None]) ** 2).sum(-1).sqrt()
    logp = lp.gather(1, x[0, 1:, None]).squeeze(1)
    return logp.numpy(), mu.numpy(), sigma.numpy()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scores_equal_a_direct_full_logits_computation(arch, arch_model, arch_texts):
    lm = arch_model(arch)
    assert lm.chunked == (arch not in FULL_LOGITS)
    ids = lm.encode(arch_texts)
    assert max(map(len, ids)) <= lm.max_length and min(map(len, ids)) >= 10
    scores, stats = score_texts(lm, arch_texts, ScoreSettings())
    assert stats.forward_passes == 1  # every length in one right-padded batch
    for i, t in enumerate(ids):
        got = scores.text(i)
        assert got.token_ids.tolist() == t
        for ours, ref in zip((got.logp, got.mu, got.sigma), direct_stats(lm.model, t)):
            np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_extraction_equals_generate(arch, arch_model, arch_texts):
    lm = arch_model(arch)
    ids = lm.encode(arch_texts)
    prompts = [t[:k] for t, k in zip(ids, (2, 4, 7, 9, 12, 5))]  # left-padded in one batch
    ours = greedy_generate(lm, prompts, NEW)
    for prompt, got in zip(prompts, ours):
        x = torch.tensor([prompt])
        ref = lm.model.generate(
            x,
            attention_mask=torch.ones_like(x),
            do_sample=False,
            max_new_tokens=NEW,
            eos_token_id=None,  # end-of-text does not stop memaudit's decoding either
            pad_token_id=0,
        )
        assert got == ref[0, len(prompt) :].tolist()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_mia_and_extract_say_which_projection_path_scored(
    arch, arch_root, arch_model, arch_files, tmp_path
):
    lm = arch_model(arch)
    common = dict(model=str(arch_root / arch), device="cpu", report=False, no_cache=True)
    mia = run_mia(
        MiaConfig(
            members=str(arch_files["members"]),
            nonmembers=str(arch_files["nonmembers"]),
            attacks="loss,zlib,min_k,min_k_pp",
            n_bootstrap=1,
            out=str(tmp_path / "mia"),
            **common,
        )
    )
    written = json.loads((mia.out_dir / "results.json").read_text())
    target = written["models"]["target"]
    assert target["chunked_projection"] is (arch not in FULL_LOGITS)
    assert target["architecture"] == type(lm.model).__name__
    assert np.isfinite(written["metrics"]["loss"]["auc"]["value"])

    k, m = 8, 6
    ext = run_extract(
        ExtractConfig(
            data=str(arch_files["members"]),
            prefix_tokens=k,
            suffix_tokens=m,
            out=str(tmp_path / "extract"),
            **common,
        )
    )
    extracted = json.loads((ext.out_dir / "results.json").read_text())
    assert extracted["models"]["target"]["chunked_projection"] is lm.chunked
    generated = pq.read_table(ext.out_dir / "scores.parquet").column("generated").to_pylist()
    texts = [json.loads(line)["text"] for line in arch_files["members"].read_text().splitlines()]
    for text, got in zip(texts, generated):
        prompt = torch.tensor([lm.encode([text])[0][:k]])
        ref = lm.model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=m,
            eos_token_id=None,
            pad_token_id=0,
        )
        assert got == lm.tokenizer.decode(ref[0, k:])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_unlearn_and_unlearn_eval_run(arch, arch_root, arch_files, tmp_path):
    unlearned = run_unlearn(
        UnlearnConfig(
            model=str(arch_root / arch),
            forget=str(arch_files["forget"]),
            retain=str(arch_files["retain"]),
            method="npo",
            steps=2,
            batch_size=4,
            retain_batch_size=2,
            seq_len=32,
            lr=1e-2,
            out=str(tmp_path / "unlearned"),
            device="cpu",
        )
    )
    out, results = run_unlearn_eval(
        UnlearnEvalConfig(
            original=str(arch_root / arch),
            unlearned=(str(unlearned),),
            forget=str(arch_files["forget"]),
            holdout=str(arch_files["holdout"]),
            retain=str(arch_files["retain"]),
            eval_texts=4,
            prefix_tokens=8,
            suffix_tokens=6,
            relearn_steps=1,
            n_bootstrap=1,
            out=str(tmp_path / "eval"),
            no_cache=True,
            device="cpu",
            report=False,
        )
    )
    ev = results["evaluation"]
    assert list(ev) == ["original", "npo"]
    assert ev["original"]["fingerprint"] != ev["npo"]["fingerprint"]  # the weights moved
    for m in ev.values():  # exact from the argmax flags of the scoring pass = greedy decoding
        assert m["forget"]["exact"] == m["forget"]["exact_generated"]
        assert np.isfinite(m["forget"]["nll"]["value"]) and np.isfinite(m["retain"]["nll"]["value"])
    assert (out / "results.json").is_file()


def test_sharded_weights_are_fingerprinted_whole(arch_root, arch_model):
    shards = sorted((arch_root / "sharded").glob("*.safetensors"))
    assert len(shards) >= 2
    assert arch_model("sharded").fingerprint != arch_model("llama").fingerprint


# ---- the BOS rule (--bos auto|always|never) ----------------------------------------------------


def plain_ids(lm: HFCausalLM, texts: list[str]) -> list[list[int]]:
    return lm.tokenizer(texts, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("arch", "bos_first"),
    [
        ("llama_bos", {"auto": True, "always": True, "never": False}),
        ("llama", {"auto": False, "always": True, "never": False}),
    ],
)
def test_each_bos_rule_gives_the_ids_it_says(arch, bos_first, arch_model, arch_texts):
    texts = arch_texts[:3]
    for rule, first in bos_first.items():
        lm = arch_model(arch, rule)
        plain = plain_ids(lm, texts)
        bos = lm.bos.bos_id
        want = [[bos, *p] if first else p for p in plain]
        assert lm.encode(texts) == want, rule
        assert lm.describe()["bos"]["texts_start_with_bos"] is first
    # the BOS-adding tokenizer's own <s>; GPT-2-style tokenizers prepend their end-of-text
    expected = "<s>" if arch == "llama_bos" else "<|endoftext|>"
    assert arch_model(arch, "always").describe()["bos"]["bos_token"] == expected


def test_always_scores_the_first_real_token_as_a_forward_on_bos_plus_ids(arch_model, arch_texts):
    auto, always = arch_model("llama", "auto"), arch_model("llama", "always")
    texts = arch_texts[:3]
    s_auto, _ = score_texts(auto, texts)
    s_always, _ = score_texts(always, texts)
    for i, p in enumerate(plain_ids(auto, texts)):
        ids = [always.bos.bos_id, *p]
        assert len(s_always.text(i).logp) == len(p) == len(s_auto.text(i).logp) + 1
        for ours, ref in zip(
            (s_always.text(i).logp, s_always.text(i).mu, s_always.text(i).sigma),
            direct_stats(always.model, ids),
        ):
            np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_the_cache_keeps_rules_apart(arch_model, arch_texts, tmp_path):
    texts = arch_texts[:2]
    for arch in ("llama", "llama_bos"):
        first, _ = score_texts(arch_model(arch, "auto"), texts, cache_root=tmp_path)
        other, stats = score_texts(
            arch_model(arch, "never" if arch == "llama_bos" else "always"),
            texts,
            cache_root=tmp_path,
        )
        assert stats.cached_texts == 0 and len(other.text(0).logp) != len(first.text(0).logp)
    # auto and always give the same ids on a tokenizer that adds a BOS: the cache is shared
    _, stats = score_texts(arch_model("llama_bos", "always"), texts, cache_root=tmp_path)
    assert stats.cached_texts == len(texts)


def test_mia_records_the_rule_and_an_unknown_rule_is_one_line(arch_root, arch_files, tmp_path):
    runner = CliRunner()
    common = [
        "--model",
        arch_root / "llama",
        "--members",
        arch_files["members"],
        "--nonmembers",
        arch_files["nonmembers"],
        "--attacks",
        "loss",
        "--n-bootstrap",
        "1",
        "--no-cache",
        "--no-report",
    ]
    r = runner.invoke(
        app, ["mia", *map(str, common), "--bos", "always", "--out", str(tmp_path / "a")]
    )
    assert r.exit_code == 0, r.output
    bos = json.loads((tmp_path / "a" / "results.json").read_text())["models"]["target"]["bos"]
    assert (
        bos["rule"] == "always"
        and bos["texts_start_with_bos"]
        and bos["bos_token"] == "<|endoftext|>"
    )
    assert json.loads((tmp_path / "a" / "results.json").read_text())["config"]["bos"] == "always"
    r = runner.invoke(
        app, ["mia", *map(str, common), "--bos", "sometimes", "--out", str(tmp_path / "b")]
    )
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown --bos 'sometimes'; use auto, always, never" in lines[0]
    assert not (tmp_path / "b").exists()
    with pytest.raises(InputError, match="unknown --bos"):
        LoadOptions(bos="first")


def test_extract_records_the_rule_and_prompts_under_it(arch_root, arch_model, arch_files, tmp_path):
    lm = arch_model("llama_bos", "never")
    out = run_extract(
        ExtractConfig(
            model=str(arch_root / "llama_bos"),
            data=str(arch_files["members"]),
            prefix_tokens=4,
            suffix_tokens=4,
            bos="never",
            out=str(tmp_path / "x"),
            device="cpu",
            no_cache=True,
            report=False,
        )
    ).out_dir
    bos = json.loads((out / "results.json").read_text())["models"]["target"]["bos"]
    assert bos == {**lm.bos.describe(), "rule": "never", "texts_start_with_bos": False}
    prefixes = pq.read_table(out / "scores.parquet").column("prefix").to_pylist()
    texts = [json.loads(line)["text"] for line in arch_files["members"].read_text().splitlines()]
    assert prefixes == [lm.tokenizer.decode(t[:4]) for t in plain_ids(lm, texts)]
    assert not any(p.startswith("<s>") for p in prefixes)
