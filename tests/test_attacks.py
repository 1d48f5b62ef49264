"""Every registered attack: the same invariants for all, plus a test of its own definition.

An attack registered without a test of its own (``@covers``) fails
``test_every_attack_has_its_own_test``.
"""

import os
import zlib

import numpy as np
import pytest
import torch

from conftest import write_jsonl
from memaudit.attacks import ATTACKS, AttackInputs, parse_attacks
from memaudit.attacks.base import default_attacks, opt_in_attacks
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
def view_options(reference_dir, shadows_dir, mlm_dir, data_files, token_frequency_file) -> dict:
    """``mia``'s settings with every input a registered view reads pointing at a fixture."""
    return {
        **MiaConfig(model="unused", members="unused", nonmembers="unused").to_dict(),
        "reference": str(reference_dir),
        # conditional and calibrated attacks; the member prefix's texts are scored members
        # too (no other member texts exist), which inflates their scores a little
        "prefix_texts": str(data_files["nonmembers2"]),
        "member_prefix_texts": str(data_files["members"]),
        "token_frequencies": str(token_frequency_file),
        "shadows": str(shadows_dir),  # lira, lira_offline, rmia
        "population": str(data_files["nonmembers2"]),  # rmia
        # the opt-in attacks, small: 2 samples, 4 neighbours
        **{"neighbour_model": str(mlm_dir), "samia_samples": 2, "neighbours": 4},
    }


def all_views(target, reference, texts, options, names=None) -> AttackInputs:
    """The views of the attacks ``names`` (default: every registered one, the opt-in ones too),
    computed the way ``mia`` computes them.
    """
    specs = parse_attacks(names or ",".join(ATTACKS.names()))
    ctx = ViewContext(target, texts, ScoreSettings(), options, reference=reference)
    return compute_views(specs, ctx, prepare_views(specs, ctx))[0]


@pytest.fixture(scope="module")
def suite(target, reference, snippets, view_options):
    """Every view of the attacks ``all`` runs, on members (first) and non-members."""
    texts = snippets["members"] + snippets["nonmembers"]
    labels = np.r_[np.ones(len(snippets["members"])), np.zeros(len(snippets["nonmembers"]))]
    return texts, labels, all_views(target, reference, texts, view_options, "all")


OPT_IN = set(opt_in_attacks())
EXPENSIVE_N = 30  # members and as many non-members for the opt-in attacks' invariants


@pytest.fixture(scope="module")
def expensive_suite(target, snippets, view_options):
    """The opt-in attacks' views on the first 30 members and 30 non-members (they cost many
    passes per text; AUC > 0.65 at n = 60 is still > 2 standard errors above chance).
    """
    texts = snippets["members"][:EXPENSIVE_N] + snippets["nonmembers"][:EXPENSIVE_N]
    labels = np.r_[np.ones(EXPENSIVE_N), np.zeros(EXPENSIVE_N)]
    return texts, labels, all_views(target, None, texts, view_options, ",".join(sorted(OPT_IN)))


@pytest.fixture(scope="module")
def repeated_suite(repeated_model, snippets, view_options):
    """A text trained on 50 times (member) against 20 texts never seen, under repeated_model."""
    model, text = repeated_model
    texts = [text] + snippets["nonmembers2"][:20]
    labels = np.r_[1.0, np.zeros(20)]
    names = ",".join(sorted(SIGN_SHOWN_ON))
    return texts, labels, all_views(model, None, texts, view_options, names)


# where an attack's sign shows, when not on the conftest target: samia needs the model to
# recite, which the micro target barely does (its AUC there is about 0.58); repeated_model
# recites its repeated text
SIGN_SHOWN_ON = {"samia": "repeated_suite"}


def suite_of(name, request, *, sign=False):
    if sign and name in SIGN_SHOWN_ON:
        return request.getfixturevalue(SIGN_SHOWN_ON[name])
    return request.getfixturevalue("expensive_suite" if name in OPT_IN else "suite")


def direct_logp(model, text):
    ids = model.encode([text])[0]
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(model.logits(x, torch.ones_like(x))[0].double(), -1)
    return lp[torch.arange(len(ids) - 1), ids[1:]].numpy(), lp[:-1]


# ---- the same invariants for every registered attack -------------------------------------


@pytest.mark.parametrize("name", ATTACKS.names())
def test_sign_members_score_higher(name, request):
    texts, labels, inputs = suite_of(name, request, sign=True)
    [spec] = parse_attacks(name)
    assert roc_auc(spec(inputs), labels) > 0.65  # > 4 standard errors above chance at n = 200


@pytest.mark.parametrize("name", ATTACKS.names())
def test_permuting_inputs_permutes_scores(name, request):
    texts, labels, inputs = suite_of(name, request)
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


# ---- shadow-model attacks (attacks/shadows.py) ---------------------------------------------


@pytest.fixture(scope="module")
def shadow_models(shadows_dir):
    """Each shadow model, and (pool text -> its IN/OUT row over the shadows)."""
    import json

    record = json.loads((shadows_dir / "shadows.json").read_text())
    models = [load_causal_lm(shadows_dir / s["dir"]) for s in record["shadows"]]
    pool = [json.loads(line)["text"] for line in open(shadows_dir / "pool.jsonl")]
    membership = np.load(shadows_dir / "membership.npz")["membership"]
    return models, {t: membership[:, j] for j, t in enumerate(pool)}


def direct_shadow_stats(texts, target, shadow_models, idx):
    """Target and shadow mean log-likelihoods and IN rows of ``texts[idx]``, by direct forwards."""
    models, rows = shadow_models
    s = np.array([direct_logp(target, texts[i])[0].mean() for i in idx])
    shadow = np.array([[direct_logp(m, texts[i])[0].mean() for m in models] for i in idx])
    member = np.array([rows.get(texts[i], np.zeros(len(models), bool)) for i in idx])
    return s, shadow, member


def test_the_shadows_view_is_each_shadow_on_each_text(suite, target, shadow_models):
    texts, _, inputs = suite
    idx = [0, 150]
    _, shadow, member = direct_shadow_stats(texts, target, shadow_models, idx)
    view = inputs.view("shadows")
    np.testing.assert_allclose(view["scores"][idx], shadow, atol=1e-5)
    np.testing.assert_array_equal(view["member"][idx], member)
    assert (view["member"].sum(axis=1) == 2).all()  # every target text: IN for 2 of 4


@covers("lira")
def test_lira_is_the_gaussian_likelihood_ratio(suite, target, shadow_models):
    from scipy.stats import norm

    texts, _, inputs = suite
    view = inputs.view("shadows")
    scores, member = view["scores"], view["member"]
    own, fixed = (s(inputs) for s in parse_attacks("lira:fixed_variance=0,lira"))
    s, shadow, rows = direct_shadow_stats(texts, target, shadow_models, [3, 160])
    # the global standard deviations: pooled over every text's deviations from its own mean
    pooled = {}
    for side, mask in (("in", member), ("out", ~member)):
        dev = [x - x.mean() for x in (scores[i][mask[i]] for i in range(len(texts)))]
        pooled[side] = np.sqrt(sum((d**2).sum() for d in dev) / sum(len(d) - 1 for d in dev))
    for k, i in enumerate((3, 160)):
        x_in, x_out = shadow[k][rows[k]], shadow[k][~rows[k]]
        expected = norm.logpdf(s[k], x_in.mean(), x_in.std(ddof=1)) - norm.logpdf(
            s[k], x_out.mean(), x_out.std(ddof=1)
        )
        assert own[i] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        expected = norm.logpdf(s[k], x_in.mean(), pooled["in"]) - norm.logpdf(
            s[k], x_out.mean(), pooled["out"]
        )
        assert fixed[i] == pytest.approx(expected, rel=1e-4, abs=1e-4)


@covers("lira_offline")
def test_lira_offline_is_the_one_sided_test_of_the_out_gaussian(suite, target, shadow_models):
    from scipy.stats import norm

    texts, _, inputs = suite
    [spec] = parse_attacks("lira_offline:fixed_variance=0")
    got = spec(inputs)
    s, shadow, rows = direct_shadow_stats(texts, target, shadow_models, [8, 111])
    for k, i in enumerate((8, 111)):
        out = shadow[k][~rows[k]]
        # the paper's score Phi((s - mu) / sigma), reported as the z-score inside it
        expected = norm.cdf(s[k], loc=out.mean(), scale=out.std(ddof=1))
        assert norm.cdf(got[i]) == pytest.approx(expected, abs=1e-5)


@covers("rmia")
def test_rmia_counts_the_population_texts_x_dominates(suite, target, shadow_models, snippets):
    from memaudit.attacks.base import mean_logp

    texts, _, inputs = suite
    pop = inputs.view("shadow_population")
    population = snippets["nonmembers2"]
    # the population's scores are the models' own on those texts
    fits = [j for j, t in enumerate(population) if len(target.encode([t])[0]) <= 128][:2]
    s_z, shadow_z, _ = direct_shadow_stats(population, target, shadow_models, fits)
    np.testing.assert_allclose(pop.target[fits], s_z, atol=1e-5)
    np.testing.assert_allclose(pop.shadows[fits], shadow_z, atol=1e-5)
    assert not pop.member.any()  # not in the pool: OUT for every shadow
    view = inputs.view("shadows")
    s_all = mean_logp(inputs.target)  # the loss attack, checked against direct forwards above
    for params, gamma in (("", 1.0), (":gamma=2:a=0.5", 2.0), (":online=1", 1.0)):
        [spec] = parse_attacks("rmia" + params)
        got = spec(inputs)
        online, a = bool(spec.params["online"]), spec.params["a"]
        ratio_z = [
            rmia_ratio(pop.target[j], pop.shadows[j], pop.member[j], online=online, a=a)
            for j in range(100)
        ]
        ratios = []
        for i in (0, 5, 120, 199):
            ratio_x = rmia_ratio(s_all[i], view["scores"][i], view["member"][i], online=online, a=a)
            count = sum(ratio_x / rz >= gamma for rz in ratio_z)
            assert int(got[i] * 101) == count and got[i] * 101 > count
            ratios.append(ratio_x)
        # within a tie in the count, the text with the higher ratio scores higher
        assert np.argsort(got[[0, 5, 120, 199]]).tolist() == np.argsort(ratios).tolist()


def test_models_uses_each_texts_first_k_in_and_out_shadows(suite):
    from memaudit.attacks.base import mean_logp

    _, _, inputs = suite
    view = inputs.view("shadows")
    scores, member = view["scores"], view["member"]  # (N, 4); each text IN for 2
    s = mean_logp(inputs.target)
    first_out = np.array([row[~m][0] for row, m in zip(scores, member)])
    # one OUT score per text: the deviation is that of all the used scores together
    got = parse_attacks("lira_offline:models=1")[0](inputs)
    np.testing.assert_allclose(got, (s - first_out) / np.std(first_out), rtol=1e-9)
    # rmia offline, a = 1: p(x) is the first OUT shadow's p(x | theta)
    pop = inputs.view("shadow_population")
    r_z = np.sort(pop.target - pop.shadows[:, 0])  # population: OUT everywhere
    count = np.searchsorted(r_z, s - first_out, side="right")
    rmia_1 = parse_attacks("rmia:models=1")[0](inputs)
    np.testing.assert_array_equal(np.floor(rmia_1 * (len(r_z) + 1)), count)
    # k at least the shadows a text has on each side: every shadow, as the default (the
    # population is OUT for all 4)
    for name, k in (("lira", 2), ("lira_offline", 2), ("rmia", 4)):
        all_k, default = parse_attacks(f"{name}:models={k},{name}")
        np.testing.assert_array_equal(all_k(inputs), default(inputs))
    with pytest.raises(InputError, match="models must be a whole number"):
        parse_attacks("lira:models=1.5")


def rmia_ratio(target_logp, shadow_logp, member, *, online, a):
    """p(x | theta) / p(x), p(x | theta) the geometric-mean token probability exp(mean log p)."""
    if online:
        px = np.mean([np.exp(v) for v in shadow_logp])
    else:
        p_out = np.mean([np.exp(v) for v, m in zip(shadow_logp, member) if not m])
        px = 0.5 * ((1 + a) * p_out + (1 - a))
    return np.exp(target_logp) / px


def _words_rouge(candidate: str, reference: str, n: int) -> float:
    """ROUGE-N recall written out with loops: each reference n-gram matched once at most."""
    ref, cand = reference.split(), candidate.split()
    ref_grams = [tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)]
    pool = [tuple(cand[i : i + n]) for i in range(len(cand) - n + 1)]
    hits = 0
    for g in ref_grams:
        if g in pool:
            pool.remove(g)
            hits += 1
    return hits / len(ref_grams)


def _direct_samples(model, prompt, m, length, *, temperature, top_k, seed):
    """The same seeded sampling without the KV cache, padding or batching: the whole sequence
    through the model at every step.
    """
    from memaudit.models.generation import _prompt_generator

    gen = _prompt_generator(model, prompt, seed)
    rows = torch.tensor([list(prompt)] * m)  # (M, P)
    for _ in range(length):
        logits = model.logits(rows, torch.ones_like(rows))[:, -1].float()  # (M, V)
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits / temperature, dim=-1)
        rows = torch.cat([rows, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return rows[:, len(prompt) :].tolist()


@covers("samia")
def test_samia_is_mean_rouge_of_seeded_samples(expensive_suite, target, view_options):
    from memaudit.attacks.sampled import split_prefix

    texts, _, inputs = expensive_suite
    plain, with_zlib = (s(inputs) for s in parse_attacks("samia,samia:zlib=1"))
    m = view_options["samia_samples"]
    for i in (0, 45):
        ids = target.encode([texts[i]])[0]
        cut = split_prefix(ids, view_options["samia_prefix_share"])
        assert cut == round(0.5 * len(ids))
        samples = _direct_samples(
            target, ids[:cut], m, len(ids) - cut, temperature=1.0, top_k=50, seed=0
        )
        decode = lambda t: target.tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
        suffix = decode(ids[cut:])
        rouge = [_words_rouge(decode(x), suffix, 1) for x in samples]
        sizes = [len(zlib.compress(decode(x).encode())) for x in samples]
        assert plain[i] == pytest.approx(np.mean(rouge), abs=1e-12)
        assert with_zlib[i] == pytest.approx(np.mean(np.multiply(rouge, sizes)), abs=1e-9)
    # the same seed gives the same scores; another seed other samples
    again = all_views(target, None, texts[:6], view_options, "samia")
    np.testing.assert_array_equal(parse_attacks("samia")[0](again), plain[:6])
    other = all_views(target, None, texts[:6], {**view_options, "attack_seed": 1}, "samia")
    assert not np.array_equal(other.view("samia")["rouge"], inputs.view("samia")["rouge"][:6])


def test_samia_on_the_recited_text(repeated_suite):
    texts, labels, inputs = repeated_suite
    [spec] = parse_attacks("samia")
    scores = spec(inputs)
    assert scores[0] > np.nanmax(scores[1:])  # the repeated text is recited, the unseen not


def test_rouge_n():
    from memaudit.attacks.sampled import rouge_n

    assert rouge_n("a b a c".split(), "a a b".split(), 1) == 1.0
    assert rouge_n("a b".split(), "a a b".split(), 1) == pytest.approx(2 / 3)
    assert rouge_n("x a b y".split(), "a b c".split(), 2) == 0.5
    assert np.isnan(rouge_n("a".split(), "a".split(), 2))


@covers("neighbourhood")
def test_neighbourhood_against_neighbour_losses(expensive_suite, target, view_options):
    from memaudit.attacks.sampled import _load_neighbour_model, neighbours_of

    texts, _, inputs = expensive_suite
    [spec] = parse_attacks("neighbourhood")
    got = spec(inputs)
    ctx = ViewContext(target, texts, ScoreSettings(), view_options)
    mlm = _load_neighbour_model(ctx)
    for i in (1, 50):
        found = neighbours_of(mlm, texts[i])
        assert len(found) == view_options["neighbours"] and texts[i] not in found
        assert found == neighbours_of(mlm, texts[i])  # seeded dropout
        for nb in found:  # one word replaced: the text around it is kept as it was
            head = len(os.path.commonprefix([nb, texts[i]]))
            tail = len(os.path.commonprefix([nb[::-1], texts[i][::-1]]))
            changed = texts[i][head : len(texts[i]) - tail]
            assert changed.strip() and not any(c.isspace() for c in changed.strip())
        expected = direct_logp(target, texts[i])[0].mean() - np.mean(
            [direct_logp(target, nb)[0].mean() for nb in found]
        )
        assert got[i] == pytest.approx(expected, abs=1e-5)
    # every neighbour through the target in one scoring call
    specs = parse_attacks("neighbourhood")
    _, stats = compute_views(
        specs,
        ctx := ViewContext(target, texts[:3], ScoreSettings(), view_options),
        prepare_views(specs, ctx),
    )
    assert stats["neighbourhood/target"].texts == 3 * view_options["neighbours"]


@covers("gradnorm")
def test_gradnorm_is_minus_mean_parameter_gradient_norm(expensive_suite, target):
    texts, _, inputs = expensive_suite
    got = {p: parse_attacks(f"gradnorm:p={p}")[0](inputs) for p in ("1", "2", "inf")}
    lm = target.model
    for i in (2, 55):
        x = torch.tensor([target.encode([texts[i]])[0]])
        lm.zero_grad()
        logp = torch.log_softmax(lm(input_ids=x).logits[0, :-1], -1)
        (-logp[torch.arange(x.shape[1] - 1), x[0, 1:]].mean()).backward()
        for p in got:
            norms = [w.grad.norm(float(p)) for w in lm.parameters() if w.grad is not None]
            assert got[p][i] == pytest.approx(-torch.stack(norms).mean().item(), rel=1e-5)
        lm.zero_grad(set_to_none=True)
    assert parse_attacks("gradnorm")[0].params == {"p": float("inf")}  # MIMIR's default


def test_opt_in_attacks_run_only_when_named():
    from memaudit.attacks.views import select_attacks

    assert OPT_IN == {"samia", "neighbourhood", "gradnorm"}
    specs, notes = select_attacks("all", given=lambda s: True, flag=str)
    assert not OPT_IN & {s.attack.name for s in specs}
    assert "attack 'samia' left out: expensive, name it in --attacks" in notes
    specs, notes = select_attacks("loss,gradnorm", given=lambda s: True, flag=str)
    assert [s.column for s in specs] == ["loss", "gradnorm"] and not notes
    for bad, message in (
        ("gradnorm:p=3", "p must be 1, 2 or inf"),
        ("samia:zlib=2", "zlib must be 0 or 1"),
    ):
        with pytest.raises(InputError, match=message):
            parse_attacks(bad)


# ---- parsing -------------------------------------------------------------------------------


def test_parse_attacks_names_params_and_errors():
    assert [s.column for s in parse_attacks("loss, min_k:k=0.1,min_k")] == [
        "loss",
        "min_k:k=0.1",
        "min_k",
    ]
    assert [s.column for s in parse_attacks("all")] == default_attacks()
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


# ---- conditional and calibrated attacks ------------------------------------------------------


def direct_after(model, prefix, ids):
    """log p of tokens 1.. of ``ids`` after ``prefix``: one forward of the concatenation."""
    x = torch.tensor([list(prefix) + list(ids)])
    with torch.no_grad():
        lp = torch.log_softmax(model.logits(x, torch.ones_like(x))[0].double(), -1)
    p = len(prefix)
    return lp[torch.arange(p, p + len(ids) - 1), torch.tensor(ids[1:])].numpy()


@pytest.fixture(scope="module")
def prefixes(target, suite, view_options):
    from memaudit.attacks.conditional import read_prefix

    texts, _, _ = suite
    ctx = ViewContext(target, texts, ScoreSettings(), view_options)
    return {
        "nonmember_prefix": read_prefix(ctx, "prefix_texts", "non-member prefix").ids,
        "member_prefix": read_prefix(ctx, "member_prefix_texts", "member prefix").ids,
    }


def conditional_ll(target, inputs, prefix, i):
    """Mean log p of text i's scored tokens after ``prefix``, computed directly: the tokens that
    fit after the prefix from one forward of prefix + text, the rest as scored without it.
    """
    ids = [int(v) for v in inputs.target.text(i).token_ids]
    room = target.max_length - len(prefix)
    head = direct_after(target, prefix, ids[:room])
    return np.r_[head, inputs.target.text(i).logp[room - 1 :]].mean()


@covers("recall")
def test_recall_cached_prefix_equals_direct_computation(suite, target, prefixes):
    texts, _, inputs = suite
    prefix = prefixes["nonmember_prefix"]
    cached = inputs.view("nonmember_prefix")
    n_tokens = inputs.target.n_tokens
    fits = [i for i in range(len(texts)) if n_tokens[i] + len(prefix) <= target.max_length]
    longer = [i for i in range(len(texts)) if i not in fits]
    assert fits and longer  # both sides of the window rule
    for i in fits[:3] + longer[:2]:
        ids = [int(v) for v in inputs.target.text(i).token_ids]
        room = target.max_length - len(prefix)
        np.testing.assert_allclose(
            cached.text(i).logp[: room - 1], direct_after(target, prefix, ids[:room]), atol=1e-5
        )
    [spec] = parse_attacks("recall")
    got = spec(inputs)
    for i in (fits[0], longer[0]):
        expected = conditional_ll(target, inputs, prefix, i) / inputs.target.text(i).logp.mean()
        assert got[i] == pytest.approx(expected, rel=1e-5)


@covers("con_recall")
def test_con_recall_contrasts_the_two_prefixes(suite, target, prefixes):
    texts, _, inputs = suite
    [spec] = parse_attacks("con_recall:gamma=0.3")
    got = spec(inputs)
    for i in (4, 130):
        ll = inputs.target.text(i).logp.mean()
        nonmember = conditional_ll(target, inputs, prefixes["nonmember_prefix"], i)
        member = conditional_ll(target, inputs, prefixes["member_prefix"], i)
        assert got[i] == pytest.approx((nonmember - 0.3 * member) / ll, rel=1e-5)
    recall, gamma0 = (s(inputs) for s in parse_attacks("recall,con_recall:gamma=0"))
    np.testing.assert_allclose(gamma0, recall)


@covers("dc_pdd")
def test_dc_pdd_calibrates_by_smoothed_corpus_frequencies(suite, target, snippets):
    texts, _, inputs = suite
    counts: dict[int, int] = {}
    for ids in target.encode(snippets["reference_corpus"]):
        for v in ids:
            counts[v] = counts.get(v, 0) + 1
    total = sum(counts.values())
    [spec] = parse_attacks("dc_pdd:a=0.05")
    got = spec(inputs)
    for i in (0, 1, 170):
        ids = target.encode([texts[i]])[0]
        logp, _ = direct_logp(target, texts[i]) if len(ids) <= target.max_length else (None, None)
        if logp is None:
            logp = inputs.target.text(i).logp
        seen, terms = set(), []
        for t, v in enumerate(ids[1:]):
            if v in seen:
                continue
            seen.add(v)
            freq = (counts.get(v, 0) + 1) / (total + target.vocab_size)
            terms.append(min(np.exp(logp[t]) * -np.log(freq), 0.05))
        assert got[i] == pytest.approx(np.mean(terms), rel=1e-4)


def test_swap_words_swaps_words_and_is_seeded():
    from memaudit.attacks.pac import augment

    text = "alpha beta gamma delta epsilon zeta eta theta"
    copies = augment(text, 3, seed=1)
    assert copies == augment(text, 3, seed=1) and copies != augment(text, 3, seed=2)
    for c in copies:
        assert sorted(c.split(" ")) == sorted(text.split(" ")) and c != text


@covers("pac")
def test_pac_polarized_distance_against_augmented_copies(suite, target, view_options):
    from memaudit.attacks.pac import augment

    texts, _, inputs = suite
    [spec] = parse_attacks("pac:far=0.1:local=0.2")
    got = spec(inputs)

    def pd(logp):
        s = sorted(float(v) for v in logp)
        n_far, n_local = max(1, int(0.1 * len(s))), max(1, int(0.2 * len(s)))
        return np.mean(s[len(s) - n_far :]) - np.mean(s[:n_local])

    short = [i for i, n in enumerate(inputs.target.n_tokens) if n <= 100]
    for i in short[:2]:
        copies = augment(texts[i], view_options["pac_augmentations"], view_options["pac_seed"])
        calibration = np.mean([pd(direct_logp(target, c)[0]) for c in copies])
        assert got[i] == pytest.approx(calibration - pd(direct_logp(target, texts[i])[0]), abs=1e-5)


def test_conditional_params_and_requirements_are_checked(suite):
    from memaudit.attacks.views import select_attacks

    with pytest.raises(InputError, match="gamma must be >= 0"):
        parse_attacks("con_recall:gamma=-1")
    with pytest.raises(InputError, match="a must be > 0"):
        parse_attacks("dc_pdd:a=0")
    with pytest.raises(InputError, match=r"far must be in \(0, 1\]"):
        parse_attacks("pac:far=2")
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    with pytest.raises(InputError, match="needs --token-frequencies or --index"):
        select_attacks("dc_pdd", given=lambda name: False, flag=flag)
    kept, _ = select_attacks("dc_pdd", given=lambda name: name == "index", flag=flag)
    assert [s.column for s in kept] == ["dc_pdd"]
    kept, notes = select_attacks("all", given=lambda name: name == "prefix_texts", flag=flag)
    assert "recall" in [s.column for s in kept] and "con_recall" not in [s.column for s in kept]
    assert any("con_recall" in n and "--member-prefix-texts" in n for n in notes)


def test_all_can_be_one_item_of_the_list():
    from memaudit.attacks.base import default_attacks
    from memaudit.attacks.views import select_attacks

    specs = parse_attacks("all,gradnorm,loss,rmia:models=2")
    columns = [s.column for s in specs]
    assert columns == [*default_attacks(), "gradnorm", "rmia:models=2"]  # loss not twice
    given = {"shadows", "population"}
    kept, notes = select_attacks("all,gradnorm", given=given.__contains__, flag=str)
    assert "gradnorm" in [s.column for s in kept]
    assert not any(n.startswith("attack 'gradnorm'") for n in notes)
    assert "attack 'samia' left out: expensive, name it in --attacks" in notes
    assert "attack 'recall' left out: no prefix_texts given" in notes  # from all: a note
    with pytest.raises(InputError, match="attack 'recall' needs prefix_texts"):
        select_attacks("all,recall", given=given.__contains__, flag=str)  # named: an error
