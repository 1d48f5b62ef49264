"""The scoring engine against direct, one-text-at-a-time computations."""

import numpy as np
import pytest
import torch

from memaudit.scoring.engine import ScoreSettings, score_texts, token_stats, windows_for


def direct_logprobs(model, ids, begin=0):
    """log-softmax over the full vocabulary of one plain forward on ids[begin:], float64."""
    x = torch.tensor([ids[begin:]])
    with torch.no_grad():
        return torch.log_softmax(model.logits(x, torch.ones_like(x))[0].double(), -1)  # (T, V)


def test_token_stats_equal_a_direct_float64_computation():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 300, generator=gen) * 4
    logits[0, 7] = 80.0  # a nearly one-hot row
    logits[1:10] *= 0.02  # nearly uniform rows (a fresh model): |mu| >> sigma
    targets = torch.randint(0, 300, (50,), generator=gen)
    logp, mu, sigma, is_argmax = token_stats(logits, targets)
    lp = torch.log_softmax(logits.double(), -1)
    p = lp.exp()
    ref_mu = (p * lp).sum(-1)
    ref_sigma = ((p * (lp - ref_mu[:, None]) ** 2).sum(-1)).sqrt()
    torch.testing.assert_close(logp.double(), lp[torch.arange(50), targets], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mu.double(), ref_mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sigma.double(), ref_sigma, atol=1e-5, rtol=1e-5)
    assert torch.equal(is_argmax, logits.argmax(-1) == targets)


def test_every_token_is_scored_exactly_once():
    for n in range(0, 60):
        for length in (2, 3, 8, 16):
            for stride in range(1, length):
                covered = [t for b, e, f in windows_for(n, length, stride) for t in range(f, e)]
                assert covered == list(range(1, n)), (n, length, stride)
                for b, e, f in windows_for(n, length, stride)[1:]:
                    assert e - b <= length and f - b >= length - stride  # the promised context


def test_scores_equal_direct_computation(target, snippets):
    texts = snippets["members"][:6] + snippets["nonmembers"][:6]
    scores, stats = score_texts(target, texts, ScoreSettings(batch_tokens=512), cache_root=None)
    assert stats.forward_passes >= 2  # several batches, so padding is exercised
    for i, text in enumerate(texts):
        t = scores.text(i)
        ids = target.encode([text])[0]
        lp = direct_logprobs(target, ids)[:-1]  # position p predicts token p + 1
        np.testing.assert_array_equal(t.token_ids, ids)
        np.testing.assert_allclose(
            t.logp, lp[torch.arange(len(ids) - 1), ids[1:]].numpy(), atol=1e-5
        )
        p = lp.exp()
        mu = (p * lp).sum(-1)
        np.testing.assert_allclose(t.mu, mu.numpy(), atol=1e-5)
        np.testing.assert_allclose(
            t.sigma, ((p * (lp - mu[:, None]) ** 2).sum(-1)).sqrt().numpy(), atol=1e-4
        )
        np.testing.assert_array_equal(t.is_argmax, (lp.argmax(-1) == torch.tensor(ids[1:])).numpy())


def test_sliding_windows(target, snippets):
    short = snippets["members"][0]
    n_short = len(target.encode([short])[0])
    single, _ = score_texts(target, [short], ScoreSettings(), cache_root=None)
    windowed, _ = score_texts(
        target, [short], ScoreSettings(max_length=n_short, stride=3), cache_root=None
    )
    np.testing.assert_allclose(windowed.text(0).logp, single.text(0).logp, atol=1e-6)

    long_text = "\n".join(snippets["nonmembers"][:4])
    ids = target.encode([long_text])[0]
    length, stride = 48, 16
    assert len(ids) > 3 * length
    scores, stats = score_texts(
        target, [long_text], ScoreSettings(max_length=length, stride=stride), cache_root=None
    )
    t = scores.text(0)
    assert len(t.logp) == len(ids) - 1 and np.isfinite(t.logp).all()
    assert stats.windows == len(windows_for(len(ids), length, stride))
    expected = np.empty(len(ids) - 1)
    for b, e, f in windows_for(len(ids), length, stride):
        lp = direct_logprobs(target, ids[:e], begin=b)  # the context this window gives
        for tok in range(f, e):
            expected[tok - 1] = lp[tok - 1 - b, ids[tok]]
    np.testing.assert_allclose(t.logp, expected, atol=1e-5)


def test_second_run_is_served_from_the_cache(target, snippets, tmp_path, monkeypatch):
    texts = snippets["members"][:20] + snippets["members"][:3]  # duplicates are scored once
    first, s1 = score_texts(target, texts, ScoreSettings(shard_texts=6), cache_root=tmp_path)
    assert s1.unique_texts == 20 and s1.shards_written == 4

    calls = []
    original = type(target).hidden_states
    monkeypatch.setattr(
        type(target), "hidden_states", lambda self, *a: calls.append(1) or original(self, *a)
    )
    second, s2 = score_texts(
        target, list(reversed(texts)), ScoreSettings(shard_texts=6), cache_root=tmp_path
    )
    assert calls == [] and s2.forward_passes == 0 and s2.cached_texts == 20
    for i in range(len(texts)):
        np.testing.assert_array_equal(second.text(len(texts) - 1 - i).logp, first.text(i).logp)

    # another window setting is another cache key: scored afresh
    _, s3 = score_texts(target, texts[:2], ScoreSettings(max_length=32), cache_root=tmp_path)
    assert s3.forward_passes > 0 and len(calls) > 0


def test_bad_window_settings(target):
    from memaudit.errors import InputError

    with pytest.raises(InputError, match="exceeds the model's context"):
        ScoreSettings(max_length=10_000).window(target)
    with pytest.raises(InputError, match="stride"):
        ScoreSettings(max_length=16, stride=16).window(target)
    with pytest.raises(InputError, match="batch_tokens"):
        ScoreSettings(batch_tokens=0)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _alter_consistently(path):
    """A readable shard whose log-probabilities were changed after its checksum was taken."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["logp"] = arrays["logp"] + 0.5
    np.savez(path.with_suffix(".tmp.npz"), **arrays)
    path.with_suffix(".tmp.npz").replace(path)


@pytest.mark.parametrize("damage", [_flip_a_byte, _truncate, _alter_consistently])
def test_a_corrupt_shard_is_recomputed_with_a_warning_never_used(
    damage, target, snippets, tmp_path
):
    from memaudit.scoring.cache import CorruptShardWarning

    texts = snippets["members"][:8]
    settings = ScoreSettings(shard_texts=4)
    truth, _ = score_texts(target, texts, settings, cache_root=None)
    score_texts(target, texts, settings, cache_root=tmp_path)
    shard = sorted(tmp_path.glob("*/shard-*.npz"))[0]
    damage(shard)
    with pytest.warns(CorruptShardWarning, match=str(shard)):
        again, stats = score_texts(target, texts, settings, cache_root=tmp_path)
    assert stats.cached_texts == 4 and stats.corrupt_shards == [str(shard) + ".corrupt"]
    for i in range(len(texts)):
        np.testing.assert_array_equal(again.text(i).logp, truth.text(i).logp)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten shard reads clean
        _, healed = score_texts(target, texts, settings, cache_root=tmp_path)
    assert healed.cached_texts == 8 and healed.forward_passes == 0


def test_cached_scores_of_other_token_ids_are_not_the_callers(target, snippets, tmp_path):
    texts = snippets["members"][:3]
    score_texts(target, texts, cache_root=tmp_path)
    own = [ids + ids[:1] for ids in target.encode(texts)]  # e.g. a caller that appends a token
    mine, stats = score_texts(target, texts, cache_root=tmp_path, token_ids=own)
    truth, _ = score_texts(target, texts, cache_root=None, token_ids=own)
    assert stats.cached_texts == 0
    for i in range(3):
        np.testing.assert_array_equal(mine.text(i).token_ids, own[i])
        np.testing.assert_array_equal(mine.text(i).logp, truth.text(i).logp)
    _, plain = score_texts(target, texts, cache_root=tmp_path)  # the cache kept the plain ids
    assert plain.cached_texts == 3


def test_two_runs_sharing_one_cache_at_once_agree_with_no_cache(target, snippets, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    texts = snippets["members"][:12]
    settings = ScoreSettings(shard_texts=3, batch_tokens=256)
    truth, _ = score_texts(target, texts, settings, cache_root=None)
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(score_texts, target, order, settings, cache_root=tmp_path)
            for order in (texts, texts[::-1])
        ]
        results = [r.result()[0] for r in runs]
    for scores, order in zip(results, (texts, texts[::-1])):
        for i, t in enumerate(order):
            np.testing.assert_array_equal(scores.text(i).logp, truth.text(texts.index(t)).logp)
    _, after = score_texts(target, texts, settings, cache_root=tmp_path)
    assert after.cached_texts == 12 and after.forward_passes == 0


def test_full_logits_fallback_gives_the_projection_path_numbers(target_dir, target, snippets):
    from memaudit.models.generation import greedy_generate
    from memaudit.models.hf import load_causal_lm

    fallback = load_causal_lm(target_dir)
    fallback.chunked = False  # as for a model whose logits are not a plain projection
    texts = snippets["members"][:6]
    plain, _ = score_texts(target, texts, cache_root=None)
    full, _ = score_texts(fallback, texts, cache_root=None)
    for i in range(len(texts)):
        np.testing.assert_allclose(full.text(i).logp, plain.text(i).logp, atol=1e-4)
        np.testing.assert_array_equal(full.text(i).is_argmax, plain.text(i).is_argmax)
    prompts = [ids[:8] for ids in target.encode(texts)]
    assert greedy_generate(fallback, prompts, 12) == greedy_generate(target, prompts, 12)


def test_bf16_on_cpu_scores_near_fp32_and_greedy_decoding_agrees_with_its_argmax(
    target_dir, target, snippets
):
    from memaudit.models.generation import greedy_generate
    from memaudit.models.hf import LoadOptions, load_causal_lm

    bf16 = load_causal_lm(target_dir, LoadOptions(dtype="bfloat16", device="cpu"))
    texts = snippets["nonmembers"][:24]
    exact, _ = score_texts(target, texts, cache_root=None)
    rounded, _ = score_texts(bf16, texts, cache_root=None)
    gap = np.abs(rounded.logp[rounded.scored] - exact.logp[exact.scored])
    assert np.median(gap) < 0.05 and gap.max() < 1.0
    # greedy decoding and is_argmax (extraction strength) must be one argmax: on bf16
    # logits they disagreed on about 1 token in 150 here
    prompts = [ids[:16] for ids in bf16.encode(texts)]
    generated = greedy_generate(bf16, prompts, 24)
    whole = [p + g for p, g in zip(prompts, generated)]
    scores, _ = score_texts(bf16, [f"t{i}" for i in range(len(whole))], token_ids=whole)
    for i, p in enumerate(prompts):
        assert scores.text(i).is_argmax[len(p) - 1 :].all()
