"""Every registered attack: the same invariants for all, plus a test of its own definition.

An attack registered without a test of its own (``@covers``) fails
``test_every_attack_has_its_own_test``.
"""

import zlib

import numpy as np
import pytest
import torch

from conftest import write_jsonl
from memaudit.attacks import ATTACKS, AttackInputs, parse_attacks
from memaudit.attacks.views import ViewContext, compute_views, prepare_views
from memaudit.errors import InputError, UnknownNameError
from memaudit.metrics import roc_auc
from memaudit.mia.config import MiaConfig
from memaudit.models import load_causal_lm
from memaudit.scoring.engine import ScoreSettings

COVERED: set[str] = set()


def covers(name):
    def deco(fn):
        COVERED.add(name)
        return fn

    return deco


@pytest.fixture(scope="module")
def reference(reference_dir):
    return load_causal_lm(reference_dir)


@pytest.fixture(scope="module")
def token_frequency_file(target, snippets, workdir):
    """Token counts of the reference corpus under the target's tokenizer, as dc_pdd reads them."""
    ids = np.concatenate([np.asarray(t) for t in target.encode(snippets["reference_corpus"])])
    values, counts = np.unique(ids, return_counts=True)
    rows = [{"id": int(v), "count": int(c)} for v, c in zip(values, counts)]
    return write_jsonl(workdir / "token_counts.jsonl", rows)


@pytest.fixture(scope="module")
def view_options(reference_dir, data_files, token_frequency_file) -> dict:
    """``mia``'s settings with every input a registered view reads pointing at a fixture."""
    return {
        **MiaConfig(model="unused", members="unused", nonmembers="unused").to_dict(),
        "reference": str(reference_dir),
        # conditional and calibrated attacks; the member prefix's texts are scored members
        # too (no other member texts exist), which inflates their scores a little
        "prefix_texts": str(data_files["nonmembers2"]),
        "member_prefix_texts": str(data_files["members"]),
        "token_frequencies": str(token_frequency_file),
    }


def all_views(target, reference, texts, options) -> AttackInputs:
    """Every view of every registered attack, computed the way ``mia`` computes them."""
    specs = parse_attacks("all")
    ctx = ViewContext(target, texts, ScoreSettings(), options, reference=reference)
    return compute_views(specs, ctx, prepare_views(specs, ctx))[0]


@pytest.fixture(scope="module")
def suite(target, reference, snippets, view_options):
    """Every view of members (first) and non-members."""
    texts = snippets["members"] + snippets["nonmembers"]
    labels = np.r_[np.ones(len(snippets["members"])), np.zeros(len(snippets["nonmembers"]))]
    return texts, labels, all_views(target, reference, texts, view_options)


def direct_logp(model, text):
    ids = model.encode([text])[0]
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(model.logits(x, torch.ones_like(x))[0].double(), -1)
    return lp[torch.arange(len(ids) - 1), ids[1:]].numpy(), lp[:-1]


# ---- the same invariants for every registered attack -------------------------------------


@pytest.mark.parametrize("name", ATTACKS.names())
def test_sign_members_score_higher(name, suite):
    texts, labels, inputs = suite
    [spec] = parse_attacks(name)
    assert roc_auc(spec(inputs), labels) > 0.65  # > 4 standard errors above chance at n = 200


@pytest.mark.parametrize("name", ATTACKS.names())
def test_permuting_inputs_permutes_scores(name, suite):
    texts, labels, inputs = suite
    [spec] = parse_attacks(name)
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(spec(inputs.subset(perm)), spec(inputs)[perm], rtol=1e-12)


@pytest.fixture(scope="module")
def short_inputs(target, reference, view_options):
    texts = ["x = 1", "a + b", "def f():", "import os"]
    inputs = all_views(target, reference, texts, view_options)
    assert all(n >= 2 for n in inputs.target.n_tokens)
    return inputs


@pytest.mark.parametrize("name", ATTACKS.names())
def test_no_nan_on_short_texts(name, short_inputs):
    [spec] = parse_attacks(name)
    assert np.isfinite(spec(short_inputs)).all()


def test_every_attack_has_its_own_test():
    missing = set(ATTACKS.names()) - COVERED
    assert not missing, f"registered attacks without a test of their own: {sorted(missing)}"


# ---- each attack against its definition ---------------------------------------------------


@covers("loss")
def test_loss_is_mean_token_logprob(suite, target):
    texts, _, inputs = suite
    [spec] = parse_attacks("loss")
    got = spec(inputs)
    for i in (0, 1, 150):
        assert got[i] == pytest.approx(direct_logp(target, texts[i])[0].mean(), abs=1e-5)


@covers("zlib")
def test_zlib_divides_by_compressed_bytes(suite):
    texts, _, inputs = suite
    loss, z = (s(inputs) for s in parse_attacks("loss,zlib"))
    sizes = np.array([len(zlib.compress(t.encode())) for t in texts])
    np.testing.assert_allclose(z, loss / sizes)


@covers("min_k")
def test_min_k(suite, target):
    texts, _, inputs = suite
    loss, full, tenth = (s(inputs) for s in parse_attacks("loss,min_k:k=1,min_k:k=0.1"))
    np.testing.assert_allclose(full, loss, atol=1e-9)
    logp, _ = direct_logp(target, texts[3])
    lowest = np.sort(logp)[: max(1, int(0.1 * len(logp)))]
    assert tenth[3] == pytest.approx(lowest.mean(), abs=1e-5)


@covers("min_k_pp")
def test_min_k_pp_equals_full_softmax_computation(suite, target):
    texts, _, inputs = suite
    [spec] = parse_attacks("min_k_pp:k=0.3")
    got = spec(inputs)
    for i in (2, 120):
        logp, lp_all = direct_logp(target, texts[i])
        p = lp_all.exp()
        mu = (p * lp_all).sum(-1)
        sigma = (p * (lp_all - mu[:, None]) ** 2).sum(-1).sqrt()
        z = (logp - mu.numpy()) / sigma.numpy()
        assert got[i] == pytest.approx(np.sort(z)[: int(0.3 * len(z))].mean(), abs=1e-4)


@covers("lowercase")
def test_lowercase_ratio(suite, target):
    texts, _, inputs = suite
    [spec] = parse_attacks("lowercase")
    i = 5
    nll = -direct_logp(target, texts[i])[0].mean()
    nll_lower = -direct_logp(target, texts[i].lower())[0].mean()
    assert spec(inputs)[i] == pytest.approx(nll_lower / nll, rel=1e-5)


@covers("reference")
def test_reference_difference_across_tokenizers(suite, target, reference):
    texts, _, inputs = suite
    assert reference.tokenizer_fingerprint != target.tokenizer_fingerprint
    [spec] = parse_attacks("reference")
    i = 7
    expected = direct_logp(target, texts[i])[0].mean() - direct_logp(reference, texts[i])[0].mean()
    assert spec(inputs)[i] == pytest.approx(expected, abs=1e-5)


# ---- parsing -------------------------------------------------------------------------------


def test_parse_attacks_names_params_and_errors():
    assert [s.column for s in parse_attacks("loss, min_k:k=0.1,min_k")] == [
        "loss",
        "min_k:k=0.1",
        "min_k",
    ]
    assert [s.column for s in parse_attacks("all")] == ATTACKS.names()
    with pytest.raises(UnknownNameError, match="did you mean 'min_k_pp'"):
        parse_attacks("min_kpp")
    with pytest.raises(InputError, match="settable: k"):
        parse_attacks("min_k:q=3")
    with pytest.raises(InputError, match=r"k must be in \(0, 1\]"):
        parse_attacks("min_k:k=0")
    with pytest.raises(InputError, match="named twice"):
        parse_attacks("loss,loss")
    with pytest.raises(InputError, match="needs the reference view"):
        parse_attacks("reference")[0](AttackInputs(["a"], None))


def test_mean_logp_of_texts_without_scored_tokens_anywhere_in_the_batch():
    from memaudit.attacks.base import mean_logp
    from memaudit.scoring.tokenscores import TextScores, TokenScores

    def text(logp):
        n = len(logp)
        f = np.array(logp, dtype=np.float32)
        return TextScores(np.arange(n + 1), f, f, f, np.zeros(n, dtype=bool))

    def empty():
        z = np.zeros(0, dtype=np.float32)
        return TextScores(np.zeros(0, dtype=np.int64), z, z, z, np.zeros(0, dtype=bool))

    for texts, expected in (
        ([text([-1.0, -3.0]), empty()], [-2.0, np.nan]),  # a trailing empty text
        ([empty(), text([-1.0]), text([]), text([-4.0, -2.0])], [np.nan, -1.0, np.nan, -3.0]),
    ):
        np.testing.assert_allclose(mean_logp(TokenScores.from_texts(texts)), expected)
