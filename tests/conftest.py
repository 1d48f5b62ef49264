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
        n_shadows=4,
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
