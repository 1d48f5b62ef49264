"""Does scoring on an accelerator, in fp32 and in bf16, agree with fp32 on the CPU?

    python benchmarks/check_device.py

Trains a micro model on 100 standard-library snippets, scores them and 100 held-out ones
on the CPU (fp32), then on CUDA in fp32 and bf16 (the default there), and prints the largest
per-text differences of the loss and min_k_pp scores and each run's AUCs. Needs a GPU.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.attacks import parse_attacks  # noqa: E402
from memaudit.attacks.views import score_views  # noqa: E402
from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.lm import TrainSettings, train_bpe_tokenizer, train_small_lm  # noqa: E402
from memaudit.metrics import roc_auc  # noqa: E402
from memaudit.models.hf import LoadOptions, load_causal_lm  # noqa: E402
from memaudit.scoring.engine import ScoreSettings  # noqa: E402


def main():
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    s = stdlib_snippets(700, seed=0)
    members, nonmembers = s[500:600], s[600:700]
    labels = np.r_[np.ones(100), np.zeros(100)]
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_bpe_tokenizer(s[:500], vocab_size=1024)
        model_dir = train_small_lm(
            members, Path(tmp) / "m", tokenizer=tok, settings=TrainSettings(steps=200, seq_len=64)
        )
        runs = {}
        for device, dtype in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "bfloat16")):
            model = load_causal_lm(model_dir, LoadOptions(device=device, dtype=dtype))
            inputs, _ = score_views(
                model, None, members + nonmembers, ScoreSettings(), lowercase=False
            )
            runs[(device, dtype)] = {
                spec.column: spec(inputs) for spec in parse_attacks("loss,min_k,min_k_pp")
            }
    base = runs[("cpu", "float32")]
    print(f"{'run':<18}{'attack':<10}{'AUC':>8}{'max |diff| vs cpu fp32':>26}")
    for key, scores in runs.items():
        for name, v in scores.items():
            run, auc, diff = f"{key[0]} {key[1]}", roc_auc(v, labels), np.abs(v - base[name]).max()
            print(f"{run:<18}{name:<10}{auc:>8.4f}{diff:>26.2e}")


if __name__ == "__main__":
    main()
