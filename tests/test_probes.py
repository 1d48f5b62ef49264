"""Knights and Knaves: puzzles, perturbations, parser, LiMem, and the memorization effect on a
trained model.
"""

import itertools
import json
import random
from functools import partial

import pytest
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.lab.train import TrainConfig, run_train
from memaudit.probes.consistency import limem, limem_with_ci
from memaudit.probes.kk import (
    LOGIC_PERTURBATIONS,
    PERTURBATIONS,
    Puzzle,
    make_puzzles,
    parse_answer,
    render_answer,
    to_row,
)
from memaudit.probes.kk_run import KKRunConfig, read_puzzles, run_kk, write_puzzles

runner = CliRunner()
PY_OPS = {
    "and": "({} and {})",
    "or": "({} or {})",
    "implies": "((not {}) or {})",
    "iff": "({} == {})",
}


def as_python(expr) -> str:
    """The formula as a Python expression over x0..xN-1: an evaluator independent of the
    library's.
    """
    if expr[0] == "is":
        return f"(x{expr[1]} == {expr[2]})"
    if expr[0] == "not":
        return f"(not {as_python(expr[1])})"
    return PY_OPS[expr[0]].format(as_python(expr[1]), as_python(expr[2]))


def brute_force(p: Puzzle) -> list[tuple[bool, ...]]:
    code = [compile(as_python(s), "<kk>", "eval") for s in p.statements]
    out = []
    for values in itertools.product((False, True), repeat=p.n):
        env = {f"x{k}": v for k, v in enumerate(values)}
        if all(eval(c, {}, env) == values[k] for k, c in enumerate(code)):  # noqa: S307  (our own formulas)
            out.append(values)
    return out


def test_every_puzzle_has_exactly_one_solution():
    puzzles = make_puzzles(range(2, 9), 6, seed=3)
    assert sorted({p.n for p in puzzles}) == list(range(2, 9))
    for p in puzzles:
        sols = brute_force(p)
        assert len(sols) == 1 and sols[0] == p.solution()


def test_perturbations_keep_one_solution_and_change_it_only_when_logical():
    rng = random.Random(0)
    for p in make_puzzles(range(2, 7), 5, seed=4):
        for kind, perturb in PERTURBATIONS.items():
            q = perturb(p, rng)
            sols = brute_force(q)
            assert len(sols) == 1
            if kind in LOGIC_PERTURBATIONS:
                assert sols[0] != p.solution() and q.names == p.names
            else:
                assert sols[0] == p.solution()
                assert (render_answer(q) == render_answer(p)) == (
                    kind == "order"
                )  # only the wording changes


def test_parser_reads_good_answers_and_rejects_malformed_ones():
    p = Puzzle(
        (("is", 1, True), ("is", 0, True), ("not", ("is", 0, False))), ("Alice", "Bob", "Carol")
    )
    assert parse_answer("(1) Alice is a knight. (2) Bob is a knave. (3) Carol is a knight.", p) == (
        True,
        False,
        True,
    )
    assert parse_answer(
        " (1) Alice is a knight. (2) Bob is a knight. (3) Carol is a knave.<|endoftext|>An island",
        p,
    ) == (True, True, False)
    for bad in (
        "(1) Alice is a knight. (2) Bob is a knave.",  # someone missing
        "(1) Alice is a knight. (2) Alice is a knave. (3) Carol is a knight.",  # repeated
        "(1) Alice is a knight. (2) Dave is a knave. (3) Carol is a knight.",  # not in the puzzle
        # another puzzle's role word
        "(1) Alice is a knight. (2) Bob is a liar. (3) Carol is a knight.",
        "Alice is a knight, Bob is a knave, Carol is a knight.",  # not the format
    ):
        assert parse_answer(bad, p) is None, bad


def test_limem_equals_its_formula():
    correct = [1, 1, 1, 1, 0, 0, 1, 0]
    perturbed = [1, 0, 0, 1, 1, 0, 0, 0]
    acc, cr = 5 / 8, 2 / 5  # 5 solved; 2 of those still solved after perturbation
    r = limem(correct, perturbed)
    assert (
        r["accuracy"] == acc
        and r["consistency"] == cr
        and r["limem"] == pytest.approx(acc * (1 - cr))
    )
    ci = limem_with_ci(correct, perturbed, n_bootstrap=200)
    assert ci["limem"]["ci"][0] <= r["limem"] <= ci["limem"]["ci"][1]


def test_bad_puzzle_files_name_file_and_line(tmp_path):
    good = write_puzzles(tmp_path / "good.jsonl", [3], 2)
    rows = [json.loads(line) for line in good.read_text().splitlines()]
    cases = {
        "malformed JSON": "{oops\n",
        "malformed puzzle": json.dumps(
            {**rows[0], "statements": [["xor", ["is", 0, True], ["is", 1, True]]] * 3}
        )
        + "\n",
        "solutions, not exactly one": json.dumps(
            {**rows[0], "statements": [["is", 1, True], ["is", 0, True], ["is", 0, True]]}
        )
        + "\n",
    }
    for message, line in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(good.read_text() + line)
        with pytest.raises(InputError, match=message) as e:
            read_puzzles(path)
        assert "bad.jsonl:3" in str(e.value)
    r = runner.invoke(
        app, ["probe", "kk", "make", "--people", "2-8", "--out", str(tmp_path / "x.jsonl")]
    )
    assert r.exit_code == 2 and "--people must look like" in r.stderr


def test_a_model_trained_on_puzzles_recites_them(tmp_path):
    """The paper's finding, small: high accuracy on the training puzzles, none once the logic
    changes.
    """
    data = write_puzzles(tmp_path / "kk.jsonl", [3], 12, seed=0)
    model = run_train(
        TrainConfig(
            corpus=str(data),
            out=str(tmp_path / "m"),
            model_size="micro",
            steps=300,
            seq_len=256,
            lr=6e-3,
            vocab_size=512,
            checkpoint_every=0,
        )
    )
    out, res = run_kk(
        KKRunConfig(model=str(model), data=str(data), out=str(tmp_path / "run"), n_bootstrap=200)
    )
    assert res["accuracy"] >= 0.5
    for kind in LOGIC_PERTURBATIONS:
        s = res["perturbations"][kind]
        assert (
            s["perturbed_accuracy"]["value"] <= res["accuracy"] - 0.3 and s["limem"]["value"] >= 0.3
        )
    assert (out / "report.html").is_file() and json.loads((out / "results.json").read_text())[
        "data"
    ]["puzzles"] == 12
    assert to_row(read_puzzles(data)[0])["answer"] in data.read_text()


def test_temporal_groups_across_the_cutoff():
    import datetime as dt

    from memaudit.probes.temporal import Fact, group_by_cutoff

    dates = ["2021-11-30", "2021-12-31", "2022-01-01", "2022-02-15", "2022-04-01"]
    facts = [Fact(dt.date.fromisoformat(d), "p", "1", True) for d in dates]
    g = group_by_cutoff(facts, [True, True, False, True, False], dt.date(2022, 1, 1), "quarter")
    assert (
        g["before"]["n"] == 2
        and g["before"]["value"] == 1.0
        and g["after"]["n"] == 3
        and g["after"]["value"] == pytest.approx(1 / 3)
    )
    assert {k: (v["side"], v["n"]) for k, v in g["by_period"].items()} == {
        "2021-Q4": ("before", 2),
        "2022-Q1": ("after", 2),
        "2022-Q2": ("after", 1),
    }
    g = group_by_cutoff(facts, [True] * 5, dt.date(2022, 2, 1), "quarter")
    assert g["by_period"]["2022-Q1"]["side"] == "straddles"


def test_temporal_bad_inputs(tmp_path, target_dir):
    import datetime as dt

    from memaudit.probes.temporal import (
        TemporalConfig,
        make_facts,
        read_facts,
        run_temporal,
        write_facts,
    )

    facts = write_facts(tmp_path / "f.jsonl", make_facts(dt.date(2021, 1, 1), dt.date(2021, 6, 30)))
    (tmp_path / "bad.jsonl").write_text(
        facts.read_text() + json.dumps({"date": "2021-13-01", "prompt": "p", "answer": "1"}) + "\n"
    )
    with pytest.raises(InputError, match=r"bad.jsonl:13: bad date"):
        read_facts(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"date": "2021-01-01", "prompt": "p"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: missing field 'answer'"):
        read_facts(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="outside the facts' range"):
        run_temporal(
            TemporalConfig(
                model=str(target_dir),
                facts=str(facts),
                cutoff="2023-01-01",
                out=str(tmp_path / "r"),
            )
        )
    assert not (tmp_path / "r" / "results.json").exists()


def test_a_model_trained_before_a_cutoff_knows_only_the_facts_before_it(tmp_path):
    import datetime as dt

    from memaudit.probes.temporal import (
        TemporalConfig,
        make_facts,
        run_temporal,
        write_facts,
    )

    rows = make_facts(dt.date(2021, 1, 1), dt.date(2022, 12, 31), per_month=2, seed=0)
    facts = write_facts(tmp_path / "facts.jsonl", rows)
    train = write_facts(tmp_path / "train.jsonl", [r for r in rows if r["date"] < "2022-01-01"])
    model = run_train(
        TrainConfig(
            corpus=str(train),
            out=str(tmp_path / "m"),
            model_size="micro",
            steps=600,
            seq_len=64,
            lr=3e-3,
            vocab_size=512,
            checkpoint_every=0,
        )
    )
    out, res = run_temporal(
        TemporalConfig(
            model=str(model), facts=str(facts), cutoff="2022-01-01", out=str(tmp_path / "run")
        )
    )
    assert res["before"]["n"] == res["after"]["n"] == 24
    assert res["before"]["value"] >= res["after"]["value"] + 0.2
    assert (out / "report.html").is_file()


def test_retention_of_a_repeated_canary_stays_above_a_once_seen_one(tmp_path, snippets):
    from memaudit.io.texts import write_texts
    from memaudit.lab.canaries import make_canaries, write_ledger
    from memaudit.probes.retention import RetentionConfig, run_retention

    ledger = write_ledger(tmp_path / "c.jsonl", make_canaries(repetitions=(1, 256), per_level=6))
    model = run_train(
        TrainConfig(
            corpus="stdlib",
            corpus_chars=30_000,
            ledger=str(ledger),
            out=str(tmp_path / "m"),
            model_size="micro",
            steps=600,
            seq_len=64,
            lr=3e-3,
            vocab_size=1024,
            checkpoint_every=0,
        )
    )
    new_data = write_texts(
        tmp_path / "new.jsonl", ((f"n{i}", t) for i, t in enumerate(snippets["reference_corpus"]))
    )
    out, res = run_retention(
        RetentionConfig(
            model=str(model),
            ledger=str(model / "ledger.jsonl"),
            continue_corpus=str(new_data),
            steps_list=(0, 10, 50),
            seq_len=64,
            out=str(tmp_path / "run"),
        )
    )
    assert list(res["curve"]) == ["0", "10", "50"]
    for step in res[
        "curve"
    ].values():  # recognition of the repeated canaries holds; the once-seen ones are at chance
        assert step["256"]["recognition"] >= step["1"]["recognition"] + 0.3
    assert (
        res["curve"]["0"]["256"]["recall"] > res["curve"]["0"]["1"]["recall"]
    )  # recall exists before training goes on
    assert (out / "report.html").is_file()
    with pytest.raises(InputError, match="increasing"):
        RetentionConfig(model="m", ledger="l", continue_corpus="c", steps_list=(10, 5))


def zoology_gap_law(space: int, alpha: float) -> list[float]:
    """Zoology's query-gap law, written out: p(g) = alpha (g+1)^(alpha-1) / sum, g = 0..space-1."""
    w = [alpha * i ** (alpha - 1) for i in range(1, space + 1)]
    return [x / sum(w) for x in w]


def test_mqar_zoology_layout_is_zoologys_multiquery_ar():
    import numpy as np

    from memaudit.probes.recall import MQAR

    V, T, D, n = 512, 128, 16, 300
    ids, targets = MQAR(vocab=V, length=T, pairs=D).batch(n, seed=0)
    assert ids.shape == targets.shape == (n, T)
    filler = []
    for seq, tgt in zip(ids, targets):
        keys, values = seq[0 : 2 * D : 2].tolist(), seq[1 : 2 * D : 2].tolist()
        assert len(set(keys)) == D and all(1 <= k < V // 2 for k in keys)  # distinct keys
        assert len(set(values)) == D and all(V // 2 <= v < V for v in values)  # distinct values
        value_of = dict(zip(keys, values))
        asked = [t for t in range(T) if tgt[t] >= 0]
        assert all(tgt[t] == -1 for t in range(2 * D))  # nothing asked inside the context
        # each key asked exactly once, at a query slot 2D + 2g (g < (T - 2D) / 2), answer: its value
        assert sorted(seq[t] for t in asked) == sorted(keys)
        assert all((t - 2 * D) % 2 == 0 and 0 <= (t - 2 * D) // 2 < (T - 2 * D) // 2 for t in asked)
        assert all(tgt[t] == value_of[seq[t]] for t in asked)
        filler += [seq[t] for t in range(2 * D, T) if t not in asked]
    # the filler (the slot after each query included) is drawn from the whole vocabulary
    assert set(filler) == set(range(V))
    assert np.bincount(filler, minlength=V).max() < 3 * len(filler) / V

    # with one pair the gap is one draw from the power law; compare with the formula
    for alpha in (0.01, 0.5, 1.0):
        space = 20
        ids, targets = MQAR(vocab=64, length=2 + 2 * space, pairs=1, alpha=alpha).batch(
            20_000, seed=1
        )
        rows, at = np.nonzero(targets >= 0)
        assert (rows == np.arange(20_000)).all()
        freq = np.bincount((at - 2) // 2, minlength=space) / 20_000
        assert np.abs(freq - zoology_gap_law(space, alpha)).max() < 0.015, alpha
    for bad, match in (
        (dict(layout="zoology-ish"), "unknown MQAR layout"),
        (dict(alpha=0.0), "alpha must be > 0"),
        (dict(vocab=20, pairs=10), "too few key or value ids"),
        (dict(length=30, pairs=8), "length >= 4 x pairs"),
    ):
        with pytest.raises(InputError, match=match):
            MQAR(**{"vocab": 512, "length": 128, "pairs": 4, **bad})


def test_mqar_queries_last_layout_asks_every_key_at_the_end():
    import numpy as np

    from memaudit.probes.recall import ANSWER_SLOT, FILLER, MQAR

    V, T, D, n = 512, 128, 16, 200
    ids, targets = MQAR(vocab=V, length=T, pairs=D, layout="queries-last").batch(n, seed=0)
    for seq, tgt in zip(ids, targets):
        keys, values = seq[0 : 2 * D : 2].tolist(), seq[1 : 2 * D : 2].tolist()
        assert all(FILLER < k < V // 2 for k in keys) and all(V // 2 <= v < V for v in values)
        assert ((1 <= seq[2 * D : T - 2 * D]) & (seq[2 * D : T - 2 * D] <= FILLER)).all()
        assert sorted(seq[T - 2 * D :: 2].tolist()) == sorted(keys)  # every key, at the end
        assert (seq[T - 2 * D + 1 :: 2] == ANSWER_SLOT).all()  # never followed by its value
        value_of = dict(zip(keys, values))
        assert [tgt[t] for t in range(T - 2 * D, T, 2)] == [
            value_of[k] for k in seq[T - 2 * D :: 2]
        ]
        assert (np.delete(tgt, np.arange(T - 2 * D, T, 2)) == -1).all()


def mqar_oracle(batch, *, pairs: int):
    """Looks each token after the context up among the context's key-value pairs."""
    import numpy as np

    out = np.zeros_like(batch)
    for r, seq in enumerate(batch):
        value_of = {seq[t]: seq[t + 1] for t in range(0, 2 * pairs, 2)}
        for t in range(2 * pairs, len(seq)):
            out[r, t] = value_of.get(seq[t], 0)
    return out


@pytest.mark.parametrize("layout", ["zoology", "queries-last"])
def test_mqar_oracle_is_perfect_and_random_guessing_is_at_chance(layout):
    import numpy as np

    from memaudit.probes.recall import MQAR, mqar_accuracy

    task = MQAR(vocab=512, length=128, pairs=16, layout=layout)
    ids, targets = task.batch(2000, seed=0)

    oracle = partial(mqar_oracle, pairs=task.pairs)

    def off_by_one(batch):  # the oracle's answers one position late
        return np.roll(oracle(batch), 1, axis=1)

    assert mqar_accuracy(oracle, ids, targets) == 1.0
    assert mqar_accuracy(off_by_one, ids, targets) < 0.01
    rng = np.random.default_rng(1)
    chance = mqar_accuracy(lambda b: rng.integers(256, 512, b.shape), ids, targets)
    queries = 2000 * 16  # binomial: 1/256 +- 4 standard deviations (0.0025 .. 0.0053)
    assert abs(chance - 1 / 256) < 4 * (1 / 256 * 255 / 256 / queries) ** 0.5, chance


def test_recall_layout_defaults_to_the_trained_one_else_zoology():
    from memaudit.probes.config import RecallConfig
    from memaudit.probes.recall import mqar_layout

    cfg = RecallConfig(model="m")
    assert mqar_layout(cfg, None) == ("zoology", 0.01)
    assert mqar_layout(cfg, {"task": "mqar", "layout": "zoology", "alpha": 0.2}) == ("zoology", 0.2)
    assert mqar_layout(cfg, {"task": "mqar"}) == ("queries-last", 0.01)  # recorded before layouts
    cfg = RecallConfig(model="m", layout="queries-last", alpha=0.5)
    assert mqar_layout(cfg, {"task": "mqar", "layout": "zoology"}) == ("queries-last", 0.5)
    with pytest.raises(InputError, match="unknown MQAR layout"):
        RecallConfig(model="m", layout="end")


def test_a_small_attention_model_learns_mqar_at_its_training_length(tmp_path):
    from memaudit.probes.recall import RecallConfig, run_recall, train_mqar_model

    model = train_mqar_model(tmp_path / "mqar-model", length=32, pairs=4, steps=600, seed=0)
    out, res = run_recall(
        RecallConfig(
            model=str(model), lengths=(32, 256), pairs=(4, 8), n=64, out=str(tmp_path / "run")
        )
    )
    assert res["mqar_vocab"] == 64 and res["trained_on"]["length"] == 32  # read from the model dir
    assert res["mqar_layout"] == res["trained_on"]["layout"] == "zoology"
    assert res["grid"]["32x4"] > 0.9, res["grid"]
    assert res["grid"]["256x8"] < res["grid"]["32x4"]  # recall falls beyond the training length
    assert res["grid"]["256x8"] > 10 * res["chance"]


def test_recall_probes_run_and_refuse_lengths_beyond_the_context(target_dir, target, tmp_path):
    import numpy as np
    import torch

    from memaudit.io.corpus import load_corpus
    from memaudit.probes.recall import (
        MQAR,
        NEEDLE,
        QUESTION,
        RecallConfig,
        mqar_cell_seed,
        mqar_grid,
        niah_cases,
        niah_prompt,
        run_recall,
    )

    out, res = run_recall(
        RecallConfig(
            model=str(target_dir), lengths=(32, 64), pairs=(2, 16), n=8, out=str(tmp_path / "mq")
        )
    )
    V = target.vocab_size
    assert res["mqar_vocab"] == V and res["chance"] == 1 / (V - V // 2)
    assert res["mqar_layout"] == "zoology" and res["mqar_alpha"] == 0.01
    assert res["grid"]["32x16"] is None
    for L, D in ((32, 2), (64, 2), (64, 16)):  # each cell: the model's argmax at the query keys
        ids, targets = MQAR(V, L, D).batch(8, mqar_cell_seed(0, L, D))
        with torch.no_grad():
            pred = target.model(input_ids=torch.as_tensor(ids)).logits.argmax(-1).numpy()
        asked = np.nonzero(targets >= 0)
        assert res["grid"][f"{L}x{D}"] == pytest.approx(
            (pred[asked] == targets[asked]).sum() / (8 * D)
        )
    assert (out / "report.html").is_file()
    for layout in ("zoology", "queries-last"):  # the grid reads each cell's predictions
        for D in (2, 16):
            grid = mqar_grid(
                target,
                (32, 64),
                (D,),
                vocab=V,
                n=8,
                layout=layout,
                predict=lambda b, D=D: mqar_oracle(b, pairs=D),
            )
            assert grid == ({"32x2": 1.0, "64x2": 1.0} if D == 2 else {"32x16": None, "64x16": 1.0})
    out, res = run_recall(
        RecallConfig(
            model=str(target_dir),
            task="niah",
            lengths=(64, 100),
            depths=(0.0, 1.0),
            n=2,
            out=str(tmp_path / "nh"),
        )
    )
    filler = target.tokenizer(
        "\n".join(load_corpus("stdlib", max_chars=200_000, seed=0).docs), verbose=False
    )["input_ids"]
    cases = niah_cases((64, 100), (0.0, 1.0), n=2, seed=0)
    assert set(res["grid"]) == set(cases) == {"64x0", "64x1", "100x0", "100x1"}
    for cell, (L, d, needles) in cases.items():
        found = 0
        for key, value in needles:
            prompt = niah_prompt(target.tokenizer, filler, L, d, key, value)
            needle = target.tokenizer(" " + NEEDLE.format(key=key, value=value) + " ")["input_ids"]
            at = [i for i in range(L) if prompt[i : i + len(needle)] == needle]
            question = len(target.tokenizer(QUESTION.format(key=key))["input_ids"])
            assert len(prompt) == L and at == [round(d * (L - len(needle) - question))]
            x = torch.as_tensor([prompt])
            with torch.no_grad():  # greedy decoding, 6 tokens, recomputed from scratch each time
                for _ in range(6):
                    x = torch.cat([x, target.model(input_ids=x).logits[:, -1:].argmax(-1)], 1)
            found += value in target.tokenizer.decode(x[0, L:].tolist())
        assert res["grid"][cell] == found / 2, cell
    r = runner.invoke(
        app,
        [
            "probe",
            "recall",
            "--model",
            str(target_dir),
            "--lengths",
            "64,4096",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert (
        r.exit_code == 2
        and "length 4096 is longer than the model's context of 128 tokens" in r.stderr
    )
