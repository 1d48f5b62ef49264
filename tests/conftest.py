"""Shared fixtures: real tiny models trained here, in seconds, on standard-library source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memaudit.io.corpus import stdlib_snippets
from memaudit.lab.lm import TrainSettings, train_bpe_tokenizer, train_small_lm

N = 100  # texts per set


@pytest.fixture(scope="session")
def snippets() -> dict[str, list[str]]:
    s = stdlib_snippets(500 + 5 * N, seed=0)
    return {
        "tokenizer": s[:500],
        "members": s[500 : 500 + N],
        "nonmembers": s[500 + N : 500 + 2 * N],
        "nonmembers2": s[500 + 2 * N : 500 + 3 * N],
        "reference_corpus": s[500 + 3 * N : 500 + 5 * N],
    }


@pytest.fixture(scope="session")
def tokenizer(snippets):
    return train_bpe_tokenizer(snippets["tokenizer"], vocab_size=1024)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def target_dir(snippets, tokenizer, workdir) -> Path:
    """A micro GPT-2 trained for ~25 epochs on the member texts."""
    settings = TrainSettings(steps=200, batch_size=16, seq_len=64, lr=3e-3, seed=0)
    return train_small_lm(
        snippets["members"], workdir / "target", tokenizer=tokenizer, settings=settings
    )


@pytest.fixture(scope="session")
def reference_dir(snippets, workdir) -> Path:
    """A reference model on other text of the same source, with its own tokenizer."""
    settings = TrainSettings(steps=60, batch_size=16, seq_len=64, lr=3e-3, seed=1)
    return train_small_lm(
        snippets["reference_corpus"],
        workdir / "reference",
        vocab_size=768,
        tokenizer_texts=snippets["tokenizer"],
        settings=settings,
    )


@pytest.fixture(scope="session")
def target(target_dir):
    from memaudit.models import load_causal_lm

    return load_causal_lm(target_dir)


REPEATS = 50


@pytest.fixture(scope="session")
def repeated_corpus(snippets) -> list[str]:
    """One text 50 times among 100 texts seen once."""
    return [snippets["members"][0]] * REPEATS + snippets["nonmembers"]


@pytest.fixture(scope="session")
def repeated_model(repeated_corpus, tokenizer, tmp_path_factory):
    """A micro model trained on ``repeated_corpus``, and the repeated text."""
    from memaudit.models import load_causal_lm

    path = train_small_lm(
        repeated_corpus,
        tmp_path_factory.mktemp("rep") / "m",
        tokenizer=tokenizer,
        settings=TrainSettings(steps=400, batch_size=16, seq_len=128, lr=3e-3),
    )
    return load_causal_lm(path), repeated_corpus[0]


@pytest.fixture(scope="session")
def data_files(snippets, workdir) -> dict[str, Path]:
    out = {}
    for name in ("members", "nonmembers", "nonmembers2"):
        path = workdir / f"{name}.jsonl"
        with open(path, "w") as fh:
            for i, text in enumerate(snippets[name]):
                fh.write(json.dumps({"id": f"{name}-{i}", "text": text, "group": i % 3}) + "\n")
        out[name] = path
    return out


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture(scope="session")
def shadows_dir(snippets, target_dir, workdir) -> Path:
    """4 micro shadows, trained like ``target_dir``, each on half of members + non-members."""
    from memaudit.mia.shadows import run_shadows_train

    pool = write_jsonl(
        workdir / "pool.jsonl",
        [{"text": t} for t in snippets["members"] + snippets["nonmembers"]],
    )
    return run_shadows_train(shadows_config(pool, workdir / "shadows", target_dir))


def shadows_config(pool, out, tokenizer, **changes):
    """The shadows_dir fixture's settings: the target's tokenizer, size and batch shape."""
    from memaudit.mia.config import ShadowsTrainConfig

    settings = dict(
        pool=str(pool),
        out=str(out),
        n_models=4,
        tokenizer=str(tokenizer),
        model_size="micro",
        steps=60,  # under the target's 200: seconds each, and enough to calibrate
        batch_size=16,
        seq_len=64,
        lr=3e-3,
        context=128,
        checkpoint_every=0,
        device="cpu",
    )
    return ShadowsTrainConfig(**{**settings, **changes})


@pytest.fixture(scope="session")
def mlm_dir(snippets, workdir) -> Path:
    """A tiny BERT masked LM (WordPiece) trained in seconds on the tokenizer snippets, saved
    as a local safetensors dir: the neighbourhood attack's neighbour model.
    """
    return train_tiny_mlm(snippets["tokenizer"], workdir / "mlm")


def train_tiny_mlm(texts: list[str], out: Path) -> Path:
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=False)
    wp.train_from_iterator(texts, vocab_size=800, min_frequency=2)
    out.mkdir()
    wp.save(str(out / "tokenizer.json"))
    tok = BertTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), do_lower_case=False)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,  # replacement sites: the first 64 tokens (cheap tests)
    )
    torch.manual_seed(0)
    model = BertForMaskedLM(config)
    ids = [t[:64] for t in tok(texts[:200])["input_ids"]]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(20):
        batch = [ids[(16 * step + j) % len(ids)] for j in range(16)]
        width = max(len(b) for b in batch)
        x = torch.full((16, width), tok.pad_token_id)
        for r, b in enumerate(batch):
            x[r, : len(b)] = torch.tensor(b)
        pad = x == tok.pad_token_id
        chosen = (torch.rand(x.shape, generator=gen) < 0.15) & ~pad
        labels = torch.where(chosen, x, torch.full_like(x, -100))
        loss = model(
            input_ids=x.masked_fill(chosen, tok.mask_token_id),
            attention_mask=(~pad).long(),
            labels=labels,
        ).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lab(snippets, tmp_path_factory):
    """A micro model trained with `memaudit train` on 6 snippets x 50 copies + 150 retain
    snippets (test_unlearn and test_unlearn_methods).
    """
    from memaudit.io.texts import write_texts
    from memaudit.lab.train import TrainConfig, run_train

    root = tmp_path_factory.mktemp("unlearn")
    forget, holdout, retain = (
        snippets["nonmembers2"][:6],
        snippets["nonmembers2"][6:12],
        snippets["reference_corpus"][:150],
    )
    corpus = write_texts(
        root / "corpus.jsonl", ((f"d{i}", t) for i, t in enumerate(forget * 50 + retain))
    )
    files = {
        name: write_texts(root / f"{name}.jsonl", ((f"{name}{i}", t) for i, t in enumerate(texts)))
        for name, texts in (("forget", forget), ("holdout", holdout), ("retain", retain))
    }
    model = run_train(
        TrainConfig(
            corpus=str(corpus),
            out=str(root / "model"),
            model_size="micro",
            steps=600,
            seq_len=128,
            lr=3e-3,
            vocab_size=1024,
            checkpoint_every=0,
        )
    )
    return root, model, files


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray of 2 CPUs for the whole session, its files in a folder the tests own."""
    ray = pytest.importorskip("ray", reason="the 'dist' extra (installed by `make test`)")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """``memaudit demo --quick``, run once: test_demo reads it, and the README's ``memaudit
    demo`` line (which the README test runs with ``--quick``) is this same run."""
    from typer.testing import CliRunner

    from memaudit.cli.app import app

    out = tmp_path_factory.mktemp("demo")
    r = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, r
