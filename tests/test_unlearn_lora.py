"""LoRA unlearning (adapters only, merged output, a kept adapter that loads with --adapter) and
the --eval-every curve, on the conftest's micro GPT-2.
"""

import json
from fnmatch import fnmatchcase

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.io.corpus import load_corpus
from memaudit.io.outdir import MARKER, output_names
from memaudit.io.texts import write_texts
from memaudit.lab.lm import TrainSettings, build_model, random_windows, token_stream
from memaudit.models.hf import load_causal_lm, model_fingerprint
from memaudit.unlearn.config import UnlearnConfig, UnlearnEvalConfig
from memaudit.unlearn.evaluate import run_unlearn_eval
from memaudit.unlearn.loop import LoopSettings, pad_batch, unlearn_loop
from memaudit.unlearn.lora import attach_lora, lora_targets
from memaudit.unlearn.methods import METHODS
from memaudit.unlearn.run import run_unlearn

peft = pytest.importorskip("peft", reason="the 'peft' extra (installed by `make test`)")
runner = CliRunner()
EVAL = dict(eval_prefix_tokens=16, eval_suffix_tokens=16, eval_retain_windows=8)


@pytest.fixture(scope="module")
def files(snippets, tmp_path_factory):
    """Forget: 8 texts the target memorized; holdout: 8 it never saw; retain: other members."""
    root = tmp_path_factory.mktemp("lora")
    sets = {
        "forget": snippets["members"][:8],
        "holdout": snippets["nonmembers"][:8],
        "retain": snippets["members"][8:60],
    }
    paths = {
        name: write_texts(root / f"{name}.jsonl", ((f"{name}{i}", t) for i, t in enumerate(texts)))
        for name, texts in sets.items()
    }
    return root, paths


@pytest.fixture(scope="module")
def lora_run(target_dir, files):
    root, f = files
    before = model_fingerprint(target_dir)
    out = run_unlearn(
        UnlearnConfig(
            model=str(target_dir),
            forget=str(f["forget"]),
            retain=str(f["retain"]),
            holdout=str(f["holdout"]),
            method="npo",
            steps=5,
            lr=1e-2,
            batch_size=8,
            retain_batch_size=4,
            seq_len=64,
            lora_rank=4,
            keep_adapter=True,
            eval_every=2,
            save_every=2,
            out=str(root / "u-lora"),
            **EVAL,
        )
    )
    assert model_fingerprint(target_dir) == before  # the original is never written
    return out


def test_lora_targets_follow_the_architecture(target, tokenizer):
    assert lora_targets(target.model) == ["c_attn", "c_proj", "c_fc"]  # GPT-2's Conv1D layers
    llama = build_model(tokenizer, size="micro", context=64, arch="llama")
    assert lora_targets(llama) == [
        *("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    ]
    assert lora_targets(target.model, "c_fc") == ["c_fc"]
    with pytest.raises(Exception, match="no linear layer named 'q_proj'"):
        lora_targets(target.model, "c_fc,q_proj")


def test_lora_unlearning_changes_only_the_adapters(target_dir, snippets):
    lm = load_causal_lm(target_dir)
    wrapped = attach_lora(
        lm.model, rank=4, alpha=8.0, targets=lora_targets(lm.model), base_path=str(target_dir)
    )
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    forget = lm.encode(snippets["members"][:4])
    settings = LoopSettings(steps=3, lr=1e-2, batch_size=4)
    unlearn_loop(wrapped, forget, None, METHODS.get("ga"), settings, pad_id=0)
    after = dict(wrapped.named_parameters())
    base = [n for n in after if "lora_" not in n]
    assert base and all(torch.equal(after[n], before[n]) for n in base)
    adapters = [n for n in after if "lora_" in n]
    assert {n for n, p in after.items() if p.requires_grad} == set(adapters)
    assert all(not torch.equal(after[n], before[n]) for n in adapters)  # each one trained


def test_merged_model_equals_the_base_with_the_adapter_applied(lora_run, target_dir, snippets):
    merged = load_causal_lm(lora_run)
    # independent of merging: peft's own unmerged forward, x W + (alpha / r) x A B, on the base
    applied = peft.PeftModel.from_pretrained(
        load_causal_lm(target_dir).model, str(lora_run / "adapter")
    )
    ids, mask = pad_batch(merged.encode(snippets["members"][:3]), 0, "cpu")
    with torch.no_grad():
        want = applied(input_ids=ids, attention_mask=mask).logits
        got = merged.model(input_ids=ids, attention_mask=mask).logits
        with applied.disable_adapter():
            base = applied(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - base).abs().max() > 1e-2  # the adapter did change the model


def test_the_kept_adapter_loads_with_adapter_and_scores_as_the_merged_dir(
    lora_run, target_dir, files, tmp_path
):
    _, f = files
    args = ["mia", "--members", str(f["forget"]), "--nonmembers", str(f["holdout"])]
    args += ["--attacks", "loss,min_k", "--no-cache", "--no-report"]
    scores = {}
    for name, model in (
        ("adapter", ["--model", str(target_dir), "--adapter", str(lora_run / "adapter")]),
        ("merged", ["--model", str(lora_run)]),
    ):
        r = runner.invoke(app, [*args, *model, "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        scores[name] = pq.read_table(tmp_path / name / "scores.parquet")
    for col in ("loss", "min_k"):
        torch.testing.assert_close(
            torch.tensor(scores["adapter"].column(col).to_pylist()),
            torch.tensor(scores["merged"].column(col).to_pylist()),
            atol=1e-5,
            rtol=0,
        )


def test_the_record_holds_the_lora_settings_and_the_curve(lora_run):
    record = json.loads((lora_run / "memaudit_unlearn.json").read_text())
    lora = record["lora"]
    assert (lora["rank"], lora["alpha"], lora["adapter"]) == (4, 8.0, "adapter")  # alpha: 2 x rank
    assert lora["targets"] == ["c_attn", "c_proj", "c_fc"]
    assert 0 < lora["trainable_parameters"] < lora["base_parameters"] / 10
    assert [p["step"] for p in record["eval"]] == [0, 2, 4, 5]  # start, every 2, the end
    curve = [json.loads(line) for line in (lora_run / "eval.jsonl").read_text().splitlines()]
    assert curve == record["eval"] and record["eval_notes"] == []
    checkpoint = json.loads((lora_run / "step-00002" / "memaudit_unlearn.json").read_text())
    assert [p["step"] for p in checkpoint["eval"]] == [0, 2]  # the curve so far
    assert (
        checkpoint["lora"]["adapter"] is None and not (lora_run / "step-00002" / "adapter").exists()
    )
    first, last = record["eval"][0], record["eval"][-1]
    for kind, d in (("model:unlearn", lora_run), ("adapter:unlearn", lora_run / "adapter")):
        for p in d.iterdir():  # declared, so that --overwrite never replaces a user's file
            assert p.name == MARKER or any(fnmatchcase(p.name, x) for x in output_names(kind)), p
    assert last["forget_nll"] > first["forget_nll"] and first["mia_auc"] > last["mia_auc"]


def test_the_curves_last_point_equals_unlearn_eval_on_the_saved_model(
    lora_run, target_dir, files, snippets
):
    root, f = files
    last = json.loads((lora_run / "memaudit_unlearn.json").read_text())["eval"][-1]
    cfg = UnlearnEvalConfig(
        original=str(target_dir),
        unlearned=(str(lora_run),),
        forget=str(f["forget"]),
        holdout=str(f["holdout"]),
        retain=str(f["retain"]),
        prefix_tokens=EVAL["eval_prefix_tokens"],
        suffix_tokens=EVAL["eval_suffix_tokens"],
        eval_texts=2,
        relearn_steps=0,
        n_bootstrap=1,
        no_cache=True,
        report=False,
        out=str(root / "eval"),
    )
    _, results = run_unlearn_eval(cfg)
    measured = results["evaluation"]["npo-lora"]  # a LoRA run is named so
    assert last["forget_exact"] == measured["forget"]["exact"]["value"]
    assert last["forget_nll"] == pytest.approx(measured["forget"]["nll"]["value"], abs=1e-5)
    assert last["mia_auc"] == pytest.approx(measured["mia"]["loss"]["value"], abs=1e-9)
    # the retain NLL: the model's own loss on the same fixed windows (seed + 2)
    lm = load_causal_lm(lora_run)
    docs = load_corpus(str(f["retain"]), max_chars=200_000, seed=0).docs
    settings = TrainSettings(steps=1, batch_size=8, seq_len=64, seed=2)
    windows = random_windows(token_stream(lm.tokenizer, docs), settings)(0)
    with torch.no_grad():
        want = lm.model(input_ids=windows, labels=windows).loss.item()
    assert last["retain_nll"] == pytest.approx(want, abs=1e-5)


def test_a_curve_without_holdout_says_mia_was_skipped(target_dir, files, tmp_path):
    _, f = files
    args = ["unlearn", "--model", str(target_dir), "--forget", str(f["forget"]), "--method", "ga"]
    args += ["--steps", "3", "--batch-size", "4", "--eval-every", "2", "--out", str(tmp_path / "u")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "eval: MIA AUC skipped: no --holdout" in r.stderr
    assert "eval @ step 2" in r.stderr and "eval @ step 3" in r.stderr  # a line per evaluation
    record = json.loads((tmp_path / "u" / "memaudit_unlearn.json").read_text())
    assert [p["step"] for p in record["eval"]] == [0, 2, 3] and record["lora"] is None
    assert all(p["mia_auc"] is None and p["retain_nll"] is None for p in record["eval"])
    assert record["eval_notes"] == [
        "MIA AUC skipped: no --holdout",
        "retain NLL skipped: no --retain",
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "kfac", "--lora-rank", "4"], "cannot use --lora-rank"),
        (["--method", "rmu", "--lora-rank", "4"], "rmu trains chosen base weights"),
        (["--lora-rank", "-1"], "lora_rank must be >= 0"),
        (["--keep-adapter"], "need --lora-rank"),
        (["--lora-rank", "4", "--lora-alpha", "0"], "lora_alpha must be a positive"),
        (["--holdout", "h.jsonl"], "--holdout is read by --eval-every only"),
        (["--method", "kfac", "--eval-every", "2"], "kfac takes none"),
        (["--eval-every", "-1"], "eval_every must be >= 0"),
        (["--lora-rank", "4", "--lora-targets", "q_proj"], "no linear layer named 'q_proj'"),
    ],
)
def test_bad_lora_and_eval_settings_are_refused_before_anything_is_written(
    target_dir, files, tmp_path, extra, message
):
    _, f = files
    args = ["unlearn", "--model", str(target_dir), "--forget", str(f["forget"])]
    args += ["--retain", str(f["retain"]), "--out", str(tmp_path / "x"), *extra]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
