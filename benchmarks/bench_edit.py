"""Edit time per fact of ROME, MEMIT and EMMET at batch 1 and 64, and the key statistics'
estimate against its reuse from the cache, measured in one run.

    python benchmarks/bench_edit.py [--size micro] [--repeats 3] [--tokens 20000]

The model is a randomly initialised lab GPT-2 (``--size``) with a tokenizer trained on the
synthetic facts (timings do not depend on what the weights know). Batch 1: the median over
``--repeats`` x 4 single edits, each on the original weights; batch 64: the median of
``--repeats`` batches of 64, divided by 64. ROME writes its batch of 64 one edit after another.
The covariance line compares a cold estimate over ``--tokens`` tokens with a second call that
reads the cache (it must do 0 forward passes). Quote the ratios; single times vary with load.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from memaudit.editing.covariance import cache_path, key_moment  # noqa: E402
from memaudit.editing.facts import edit_request, fact_text, make_facts  # noqa: E402
from memaudit.editing.methods import EditSettings, apply_edits  # noqa: E402
from memaudit.editing.requests import _request, encode  # noqa: E402
from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.lm import build_model, token_stream, train_bpe_tokenizer  # noqa: E402
from memaudit.models.anatomy import blocks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="micro")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=20_000)
    args = parser.parse_args()
    facts = make_facts(120, seed=0)
    general = stdlib_snippets(400, seed=0)
    tok = train_bpe_tokenizer([fact_text(f) for f in facts] + general, vocab_size=1000)
    model = build_model(tok, size=args.size, context=128, seed=0).eval()
    layer = max(0, len(blocks(model)) // 2 - 1)
    stream = token_stream(tok, general)[: args.tokens]
    with tempfile.TemporaryDirectory() as root:
        path = cache_path(Path(root), fingerprint="bench", layer=layer, stream=stream)
        t0 = time.perf_counter()
        cold = key_moment(model, stream, layer, path=path)
        t1 = time.perf_counter()
        warm = key_moment(model, stream, layer, path=path)
        t2 = time.perf_counter()
    print(
        f"key statistics, block {layer}, {cold.n_tokens} tokens: estimate {t1 - t0:.2f} s "
        f"({cold.forward_passes} forward passes), from the cache {t2 - t1:.4f} s "
        f"({warm.forward_passes} forward passes): {(t1 - t0) / max(t2 - t1, 1e-9):.0f}x"
    )
    moments = {layer: cold.moment}
    reqs = [_request(edit_request(f, facts), "facts", i) for i, f in enumerate(facts)]
    encoded = [encode(tok, r.prompt, r.target_new) for r in reqs]  # key at the prompt's end
    original = copy.deepcopy(model.state_dict())

    def seconds(batch) -> float:
        model.load_state_dict(original)
        t = time.perf_counter()
        apply_edits(model, batch, moments, settings)
        return time.perf_counter() - t

    for method in ("rome", "memit", "emmet"):
        settings = EditSettings(method=method, layers=(layer,))
        one = [seconds([encoded[i]]) for i in range(4 * args.repeats)]
        many = [seconds(encoded[64 * (i % 2) :][:64]) / 64 for i in range(args.repeats)]
        b1, b64 = statistics.median(one), statistics.median(many)
        print(
            f"{method:6s} s per fact: batch 1 {b1:.3f}, batch 64 {b64:.3f} "
            f"(batch 64 / batch 1: {b64 / b1:.2f}x)"
        )
    model.load_state_dict(original)


if __name__ == "__main__":
    main()
