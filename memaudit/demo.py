"""``memaudit demo``: the embedded default, start to finish on a machine with no downloads.

Texts come from this Python's standard library. A tokenizer is trained on one slice, a
small GPT-2-style model is trained for many epochs on the member slice, and the
membership-inference suite compares members with held-out snippets of the same source.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .atomic import write_text_atomic
from .config import MiaConfig
from .corpus import stdlib_snippets
from .mia import MiaOutcome, StageProgress, run_mia
from .train import TrainSettings, train_small_lm


@dataclass(frozen=True)
class DemoSettings:
    n_members: int = 300
    n_nonmembers: int = 300
    n_tokenizer_texts: int = 1500
    vocab_size: int = 2048
    size: str = "tiny"
    steps: int = 240
    batch_size: int = 16
    seq_len: int = 128
    seed: int = 0

    @classmethod
    def quick(cls, *, seed: int = 0) -> "DemoSettings":
        return cls(
            n_members=100, n_nonmembers=100, n_tokenizer_texts=500, vocab_size=1024, size="micro", steps=150, seq_len=64, seed=seed
        )


def run_demo(out: Path, settings: DemoSettings, *, progress: StageProgress | None = None) -> MiaOutcome:
    s = settings
    snippets = stdlib_snippets(s.n_tokenizer_texts + s.n_members + s.n_nonmembers, seed=s.seed)
    tok_texts = snippets[: s.n_tokenizer_texts]
    members = snippets[s.n_tokenizer_texts : s.n_tokenizer_texts + s.n_members]
    nonmembers = snippets[s.n_tokenizer_texts + s.n_members :]
    data = out / "data"
    for name, texts in (("members", members), ("nonmembers", nonmembers)):
        lines = (json.dumps({"id": f"{name}-{i:04d}", "text": t}) for i, t in enumerate(texts))
        write_text_atomic(data / f"{name}.jsonl", "\n".join(lines) + "\n")
    write_text_atomic(out / "demo_settings.json", json.dumps(asdict(s), indent=2))

    train = TrainSettings(steps=s.steps, batch_size=s.batch_size, seq_len=s.seq_len, seed=s.seed)
    on_step = (lambda step, loss: progress("training (steps)", step, s.steps)) if progress else None
    model_dir = train_small_lm(
        members,
        out / "model",
        size=s.size,
        context=max(256, s.seq_len),
        vocab_size=s.vocab_size,
        tokenizer_texts=tok_texts,
        settings=train,
        on_step=on_step,
    )
    config = MiaConfig(
        model=str(model_dir),
        members=str(data / "members.jsonl"),
        nonmembers=str(data / "nonmembers.jsonl"),
        out=str(out / "mia"),
        cache_dir=str(out / "cache"),
        seed=s.seed,
    )
    return run_mia(config, progress=progress)
