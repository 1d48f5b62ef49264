"""Diffusion memorization: real tiny DDPMs trained here on scikit-learn's digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.diffusion.detect import (
    DetectSettings,
    TinyAdapter,
    evaluate,
    features,
    low_timestep,
)
from memaudit.diffusion.emm import EMMConfig, emm_from_curve
from memaudit.diffusion.images import balanced_subset, load_images, write_skewed_folder
from memaudit.diffusion.measure import measure_checkpoints
from memaudit.diffusion.model import load_diffusion_model
from memaudit.diffusion.neighbours import two_nearest
from memaudit.diffusion.run import (
    DetectConfig,
    MemorizationConfig,
    run_detect,
    run_memorization,
)
from memaudit.diffusion.train import (
    DiffusionTrainConfig,
    checkpoints,
    run_diffusion_train,
)
from memaudit.errors import InputError

runner = CliRunner()
FAST = dict(width=16, batch_size=64, lr=3e-3, checkpoints=2)


@pytest.fixture(scope="module")
def digits():
    return load_images("digits")


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory):
    """Same budget (300 steps of 64): 5 training images vs 300."""
    root = tmp_path_factory.mktemp("diffusion")
    small = run_diffusion_train(
        DiffusionTrainConfig(images="digits", n=5, out=str(root / "n5"), steps=300, **FAST)
    )
    large = run_diffusion_train(
        DiffusionTrainConfig(images="digits", n=300, out=str(root / "n300"), steps=300, **FAST)
    )
    return small, large


# --- nearest neighbours -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_two_nearest_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, (300, 1, 8, 8), dtype=np.uint8)
    train[7] = train[3]  # an exact duplicate: both copies are equally near
    queries = np.concatenate(
        [rng.integers(0, 256, (50, 1, 8, 8), dtype=np.uint8), train[:20], train[:5] + 1]
    )
    nn = two_nearest(queries, train, memory_mb=0.05)  # forces many chunks
    d = (
        np.sqrt(
            (
                (
                    queries.reshape(len(queries), 1, -1).astype(np.float64)
                    - train.reshape(1, len(train), -1)
                )
                ** 2
            ).sum(-1)
        )
        / 8
    )
    brute = np.sort(d, axis=1)
    np.testing.assert_allclose(nn.d1, brute[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(nn.d2, brute[:, 1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d[np.arange(len(d)), nn.index1], nn.d1, atol=1e-12)
    np.testing.assert_allclose(d[np.arange(len(d)), nn.index2], nn.d2, atol=1e-12)
    assert (nn.index1 != nn.index2).all()
    # a copy of an image the search holds twice: d1 = d2 = 0, not memorized, as in DiffMemorize's
    # mem_ratio.py (0/0 is NaN there and NaN < 1/3 is false); ratio 1, the limit of near copies
    assert nn.d1[50 + 3] == nn.d2[50 + 3] == 0 and nn.ratio()[50 + 3] == 1.0


def test_two_nearest_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="values per image"):
        two_nearest(np.zeros((2, 4)), np.zeros((3, 5)))


# --- images -------------------------------------------------------------------------------------


def test_balanced_subset(digits):
    idx = balanced_subset(digits, 25, seed=1)
    counts = np.bincount(digits.labels[idx], minlength=10)
    assert len(set(idx.tolist())) == 25 and counts.max() - counts.min() <= 1
    with pytest.raises(InputError, match="1797"):
        balanced_subset(digits, 5000)


def _png(path: Path, size: int, value: int = 100, mode: str = "L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(path)


def test_image_folder_labels_and_errors(tmp_path):
    _png(tmp_path / "cats" / "a.png", 8, 10)
    _png(tmp_path / "dogs" / "b.png", 8, 200)
    images = load_images(str(tmp_path))
    assert (
        images.pixels.shape == (2, 1, 8, 8)
        and images.labels.tolist() == [0, 1]
        and images.class_names == ("cats", "dogs")
    )
    assert images.pixels[1].min() == 200

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        load_images(str(tmp_path / "empty"))
    mixed = tmp_path / "mixed"
    _png(mixed / "a.png", 8)
    _png(mixed / "b.png", 12)
    with pytest.raises(InputError, match=r"b\.png.*--resize"):
        load_images(str(mixed))
    assert load_images(str(mixed), resize=8).pixels.shape == (2, 1, 8, 8)
    (mixed / "c.png").write_text("not an image")
    with pytest.raises(InputError, match=r"c\.png: not a readable image"):
        load_images(str(mixed), resize=8)
    with pytest.raises(InputError, match="neither"):
        load_images(str(tmp_path / "nope"))


# --- training -----------------------------------------------------------------------------------


def test_resumed_training_equals_uninterrupted(tmp_path):
    from safetensors.torch import load_file

    cfg = dict(images="digits", n=20, steps=30, width=8, batch_size=16, checkpoints=3)
    whole = run_diffusion_train(DiffusionTrainConfig(out=str(tmp_path / "whole"), **cfg))
    killed = tmp_path / "killed"
    run_diffusion_train(DiffusionTrainConfig(out=str(killed), **cfg))
    (killed / "memaudit_diffusion.json").unlink()  # as if killed after the second checkpoint
    last = checkpoints(killed)[-1][1]
    import shutil

    shutil.rmtree(last)
    (killed / "model.safetensors").unlink()
    run_diffusion_train(DiffusionTrainConfig(out=str(killed), **cfg))
    assert json.loads((killed / "memaudit_diffusion.json").read_text())["resumed_from_step"] == 20
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_train_config_errors(tmp_path):
    lm_dir = tmp_path / "lm"
    lm_dir.mkdir()
    (lm_dir / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(
        InputError, match="another kind of model"
    ):  # never writes into another model's dir
        run_diffusion_train(DiffusionTrainConfig(images="digits", n=5, out=str(lm_dir), steps=1))
    first = run_diffusion_train(
        DiffusionTrainConfig(
            images="digits", n=5, out=str(tmp_path / "d"), steps=1, width=8, checkpoints=1
        )
    )
    with pytest.raises(InputError, match="other settings"):
        run_diffusion_train(
            DiffusionTrainConfig(
                images="digits", n=6, out=str(first), steps=1, width=8, checkpoints=1
            )
        )
    with pytest.raises(InputError, match="unknown conditioning"):
        DiffusionTrainConfig(images="digits", n=5, out="x", conditioning="text")
    with pytest.raises(InputError, match="random-labels"):
        DiffusionTrainConfig(images="digits", n=5, out="x", conditioning="class", classes=4)


def test_random_labels_are_random_and_recorded(tmp_path, digits):
    out = run_diffusion_train(
        DiffusionTrainConfig(
            images="digits",
            n=40,
            out=str(tmp_path / "r"),
            steps=2,
            width=8,
            conditioning="random-labels",
            classes=4,
            checkpoints=1,
        )
    )
    model = load_diffusion_model(out)
    assert model.classes == 4 and set(model.train_set.labels.tolist()) <= {0, 1, 2, 3}
    true = digits.labels[model.train_set.indices]
    assert (model.train_set.labels != true).any()


# --- replication ratio --------------------------------------------------------------------------


def test_small_training_set_is_replicated_large_is_not(small_and_large, digits):
    small, large = small_and_large
    r_small = measure_checkpoints(
        load_diffusion_model(small), digits, samples=200, sampling_steps=25
    )
    r_large = measure_checkpoints(
        load_diffusion_model(large), digits, samples=200, sampling_steps=25
    )
    assert r_small["max_ratio"] > 0.8, r_small
    assert r_large["max_ratio"] < 0.2 and r_large["max_ratio"] < r_small["max_ratio"] - 0.5
    assert r_small["max_ratio"] == max(v["ratio"] for v in r_small["per_checkpoint"].values())
    # the ratio recomputed from the kept samples, by brute force, gives the same share
    from memaudit.diffusion.measure import load_replication

    rep = load_replication(r_small["samples_file"])
    train = (
        digits.pixels[load_diffusion_model(small).train_set.indices].reshape(5, -1).astype(float)
    )
    d = np.sort(
        np.sqrt(((rep.samples.reshape(len(rep.samples), 1, -1) - train[None]) ** 2).sum(-1)), axis=1
    )
    assert np.mean(d[:, 0] / d[:, 1] < 1 / 3) == pytest.approx(r_small["max_ratio"])


def test_memorization_run_dir_and_cache(small_and_large, tmp_path, monkeypatch):
    small, _ = small_and_large
    with monkeypatch.context() as m:
        m.chdir(small.parent)  # the cache is made through a relative model path ...
        out, results = run_memorization(
            MemorizationConfig(
                model=small.name, samples=100, sampling_steps=20, out=str(tmp_path / "run")
            )
        )
    assert (out / "report.html").is_file() and (out / "scores.parquet").is_file()
    # ... and read from elsewhere
    again_out, again = run_memorization(
        MemorizationConfig(
            model=str(small), samples=100, sampling_steps=20, out=str(tmp_path / "run2")
        )
    )
    assert (
        again["per_checkpoint"] == results["per_checkpoint"]
        and (again_out / "report.html").is_file()
    )
    assert json.loads((out / "results.json").read_text())["max_step"] == results["max_step"]
    assert results["models"]["target"]["fingerprint"]
    with pytest.raises(InputError, match="unconditional"):
        run_memorization(
            MemorizationConfig(model=str(small), samples=10, guidance=3.0, out=str(tmp_path / "g"))
        )


def test_emm_from_curve():
    assert emm_from_curve([10, 20, 40], [1.0, 0.95, 0.5])["emm"] == pytest.approx(
        20 + 0.05 / 0.45 * 20
    )
    assert emm_from_curve([10, 20], [0.95, 0.92])["bound"] == "above"
    assert emm_from_curve([10, 20], [0.5, 0.3])["emm"] is None
    with pytest.raises(InputError):
        EMMConfig(conditionings=("none", "text"))


def test_emm_sweep_end_to_end(tmp_path):
    from memaudit.diffusion.run import run_emm

    cfg = EMMConfig(
        sizes=(5, 300),
        conditionings=("none", "random-labels"),
        steps=300,
        samples=100,
        sampling_steps=20,
        workers=2,
        out=str(tmp_path / "emm"),
        **{k: v for k, v in FAST.items() if k != "lr"},
    )
    out, results = run_emm(cfg)
    for c in ("none", "random-labels"):
        curve = results["curves"][c]
        assert curve["sizes"] == [5, 300] and curve["ratio"][0] > curve["ratio"][1]
    assert (out / "report.html").is_file()
    again_out, again = run_emm(cfg)  # resumes from the cached jobs: same numbers
    assert again["curves"] == results["curves"]


# --- detection ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skewed_model(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("skewed")
    made = write_skewed_folder(
        digits, root / "images", few=12, many=12, many_images=20, copies=20, seed=0
    )
    model = run_diffusion_train(
        DiffusionTrainConfig(
            images=str(root / "images"),
            n=None,
            out=str(root / "model"),
            conditioning="class",
            steps=1500,
            **FAST,
        )
    )
    return model, made


def test_detection_separates_memorized_classes(skewed_model, tmp_path):
    model, made = skewed_model
    out, results = run_detect(
        DetectConfig(
            model=str(model),
            prompts=made["prompts"],
            labels=made["labels"],
            n_bootstrap=200,
            out=str(tmp_path / "detect"),
        )
    )
    assert results["metrics"]["combined"]["auc"]["value"] > 0.8, results["metrics"]
    assert results["metrics"]["noise_norm"]["auc"]["value"] > 0.8
    assert (out / "report.html").is_file() and len(results["weights"]) == 2
    # the combined score is measured within each half and averaged, from the per-prompt scores
    rows = pq.read_table(out / "scores.parquet").to_pydict()
    y, s, half = (np.array(rows[k]) for k in ("label", "combined", "half"))
    per_half = [roc_auc_score(y[half == k], s[half == k]) for k in (1, 2)]
    assert results["metrics"]["combined"]["auc"]["value"] == pytest.approx(np.mean(per_half))
    assert results["definitions"]["combined"]["weights"] == "fitted"
    for name in ("noise_norm", "alignment", "wen"):
        assert results["metrics"][name]["auc"]["value"] == pytest.approx(
            roc_auc_score(y, rows[name])
        )


def _direct_features(unet, prompts, *, noises, seed, t_low, renoise_guidance=None):
    """N and A straight from the network: N at t = T - 1 on pure noise x_T, A at ``t_low`` on
    x_T itself (the authors' code) or, given ``renoise_guidance``, on x0 predicted from x_T and
    noised again with x_T. Means over the ``noises`` draws of x_T per prompt.
    """
    import torch

    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # Ho et al.'s linear schedule
    c = torch.tensor([int(p) for p in prompts]).repeat_interleave(noises)
    x = torch.randn(len(c), 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    null = torch.full_like(c, unet.config.classes)

    def eps(x, t, labels):
        with torch.no_grad():
            out = unet(x.float(), torch.full((len(x),), t), labels)
        return out.double().numpy()

    u, k = eps(x, 999, null), eps(x, 999, c)
    N = np.linalg.norm((k - u).reshape(len(c), -1), axis=1)
    x_low = x.double().numpy()
    if renoise_guidance is not None:
        guided = u + renoise_guidance * (k - u)
        x0 = np.clip((x_low - np.sqrt(1 - abar[999]) * guided) / np.sqrt(abar[999]), -1, 1)
        x_low = np.sqrt(abar[t_low]) * x0 + np.sqrt(1 - abar[t_low]) * x_low
    x_low = torch.as_tensor(x_low)
    u, k = eps(x_low, t_low, null), eps(x_low, t_low, c)
    d = k - u
    cos = (u * d).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(d, axis=1))  # (B, H, W)
    A = cos.reshape(len(c), -1).mean(1)
    return N.reshape(-1, noises).mean(1), A.reshape(-1, noises).mean(1)


@pytest.mark.parametrize("alignment", ["pure-noise", "renoised-x0"])
def test_noise_space_features_are_the_published_formulas(skewed_model, alignment):
    model, _ = skewed_model
    unet = load_diffusion_model(model).unet
    prompts = ["0", "3", "5", "12", "17", "23"]
    settings = DetectSettings(noises=2, seed=3, alignment=alignment)
    feats = features(TinyAdapter(unet), prompts, settings)
    # the authors' low timestep: timesteps[-3] of diffusers' 50-step DDIM schedule on T = 1000
    # (leading spacing, steps_offset 1)
    authors_t = int((np.arange(50)[::-1] * 20 + 1)[-3])
    assert low_timestep(settings.low_t, 1000) == authors_t == 41
    N, A = _direct_features(
        unet,
        prompts,
        noises=2,
        seed=3,
        t_low=authors_t,
        renoise_guidance=None if alignment == "pure-noise" else settings.guidance,
    )
    name = "alignment" if alignment == "pure-noise" else "alignment_renoised_x0"
    assert set(feats) == {"noise_norm", name, "wen"}
    np.testing.assert_allclose(feats["noise_norm"], N, rtol=1e-5)
    np.testing.assert_allclose(feats[name], A, rtol=1e-5, atol=1e-7)


def _shifted_features(labels: np.ndarray, halves: np.ndarray) -> dict[str, np.ndarray]:
    """Memorized prompts have the larger N and A within each half, but half 2's N sits 50 higher:
    scored by the weights fitted on half 1, all of half 2 lands above all of half 1.
    """
    rng = np.random.default_rng(0)
    n = len(labels)
    return {
        "noise_norm": labels + 0.3 * rng.random(n) + 50.0 * halves,
        "alignment": labels + 0.3 * rng.random(n),
        "wen": rng.random(n),
    }


def test_fitted_combined_score_is_measured_per_half_never_pooled():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_curve
    from sklearn.preprocessing import StandardScaler

    labels = np.array([1] * 10 + [0] * 10)
    halves = evaluate(_shifted_features(labels, np.zeros(20)), labels, n_bootstrap=2).halves
    assert sorted(np.bincount(halves * 2 + labels)) == [5, 5, 5, 5]  # stratified halves
    feats = _shifted_features(labels, halves)
    ev = evaluate(feats, labels, n_bootstrap=50)
    assert (ev.halves == halves).all()
    X = np.stack([feats["noise_norm"], feats["alignment"]], 1)
    aucs, tprs = [], []
    for k in (0, 1):  # fit on the other half, score and rank this half on its own
        fit, test = halves != k, halves == k
        scaler = StandardScaler().fit(X[fit])
        clf = LogisticRegression().fit(scaler.transform(X[fit]), labels[fit])
        s = clf.decision_function(scaler.transform(X[test]))
        aucs.append(roc_auc_score(labels[test], s))
        fpr, tpr, _ = roc_curve(labels[test], s)
        tprs.append(tpr[fpr <= 0.01].max())
    combined = ev.metrics["combined"]
    assert combined["auc"]["value"] == pytest.approx(np.mean(aucs)) == 1.0
    assert combined["tpr@1%fpr"]["value"] == pytest.approx(np.mean(tprs))
    assert [h["auc"] for h in ev.combined["per_half"]] == pytest.approx(aucs)
    assert combined["auc"]["ci_low"] <= combined["auc"]["value"] <= combined["auc"]["ci_high"]
    # ranked together, the two halves' scores would mislead: that is what is not reported
    assert roc_auc_score(labels, ev.scores["combined"]) < 0.9


@pytest.mark.parametrize(
    "weights, g", [("paper-sd1", (1.0, 2.0)), ("paper-sd2", (1.0, 0.1)), ("paper-rv", (2.0, 1.0))]
)
def test_paper_weights_are_the_authors_fixed_ones(weights, g):
    # the authors' detect_eval.py: gamma_1 (norm), gamma_2 (cosine) per model
    labels = np.array([1] * 10 + [0] * 10)
    feats = _shifted_features(labels, np.arange(20) % 2)
    ev = evaluate(feats, labels, weights=weights, n_bootstrap=20)
    expected = g[0] * feats["noise_norm"] + g[1] * feats["alignment"]
    np.testing.assert_allclose(ev.scores["combined"], expected, rtol=1e-12)
    assert ev.halves is None and (ev.weights[0]["g1"], ev.weights[0]["g2"]) == g
    assert ev.metrics["combined"]["auc"]["value"] == pytest.approx(roc_auc_score(labels, expected))
    with pytest.raises(InputError, match="unknown weights 'paper'"):
        evaluate(feats, labels, weights="paper")


def test_duplicated_one_image_classes_are_the_memorized_ones(skewed_model, tmp_path):
    model, made = skewed_model
    out, results = run_memorization(
        MemorizationConfig(
            model=str(model), samples=480, sampling_steps=25, out=str(tmp_path / "m")
        )
    )
    design = np.loadtxt(made["labels"], dtype=int)
    per_label = results["per_checkpoint"][str(results["max_step"])]["per_label"]
    r = np.array([per_label[c] for c in range(len(design))])
    assert r[design == 1].mean() > 0.4 and r[design == 0].max() < 0.1, r
    assert (
        results["train_images"] == 12 + 12 * 20
    )  # the 20 copies of each one-image class are searched once
    measured = np.loadtxt(out / "labels.txt", dtype=int)  # written for `diffusion detect`
    assert (measured <= design).all() and measured.sum() >= 4
    assert results["duplicates"] == {
        "mode": "dedup",
        "how": results["duplicates"]["how"],
        "training_images": 480,
        "distinct": 252,
    }


def test_duplicates_kept_as_diffmemorize(skewed_model, tmp_path):
    """--duplicates keep searches all 480 training images, copies included, as DiffMemorize's
    mem_ratio.py: there a copy of a duplicated image has d1 = d2 and is never memorized.
    """
    model, made = skewed_model
    out, results = run_memorization(
        MemorizationConfig(
            model=str(model),
            samples=480,
            sampling_steps=25,
            duplicates="keep",
            out=str(tmp_path / "keep"),
        )
    )
    assert results["train_images"] == 480 and results["duplicates"]["mode"] == "keep"
    design = np.loadtxt(made["labels"], dtype=int)
    per_label = results["per_checkpoint"][str(results["max_step"])]["per_label"]
    r = np.array([per_label[c] for c in range(len(design))])
    assert r[design == 1].max() < 0.05, r  # the copies of the one-image classes no longer count
    # DiffMemorize's computation, directly: the two smallest distances to every training image
    # (cdist / sqrt(C*H*W)), memorized when d1 / d2 < 1/3 (0/0 is NaN, which is not < 1/3)
    from memaudit.diffusion.measure import load_replication

    m = load_diffusion_model(model)
    train = load_images(m.train_set.source).pixels[m.train_set.indices].reshape(480, -1)
    rep = load_replication(results["samples_file"])
    q = rep.samples.reshape(len(rep.samples), -1).astype(float)
    d = np.sort(np.sqrt(((q[:, None] - train[None].astype(float)) ** 2).sum(-1)) / 8, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        memorized = d[:, 0] / d[:, 1] < 1 / 3
    assert memorized.mean() == pytest.approx(results["max_ratio"])
    with pytest.raises(InputError, match="unknown duplicates 'drop'"):
        MemorizationConfig(model=str(model), duplicates="drop")


def test_detection_input_errors(skewed_model, small_and_large, tmp_path):
    model, made = skewed_model
    labels = tmp_path / "labels.txt"
    labels.write_text("1\n0\n")
    with pytest.raises(InputError, match="2 labels for 24 prompts"):
        run_detect(
            DetectConfig(
                model=str(model),
                prompts=made["prompts"],
                labels=str(labels),
                out=str(tmp_path / "d"),
            )
        )
    labels.write_text("1\n\nyes\n")  # a blank line does not shift the reported line number
    with pytest.raises(InputError, match=r"labels.txt:3: label .yes. is not 0 or 1"):
        run_detect(
            DetectConfig(
                model=str(model),
                prompts=made["prompts"],
                labels=str(labels),
                out=str(tmp_path / "d"),
            )
        )
    with pytest.raises(InputError, match="unconditional"):
        TinyAdapter(load_diffusion_model(small_and_large[0]).unet)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("0\n99\n1\n2\n")
    labels.write_text("1\n1\n0\n0\n")
    with pytest.raises(InputError, match="'99' is not a class id"):
        run_detect(
            DetectConfig(
                model=str(model), prompts=str(prompts), labels=str(labels), out=str(tmp_path / "d")
            )
        )


def make_tiny_sd(root: Path) -> Path:
    """A Stable-Diffusion-style directory with random tiny weights: unet, CLIP text encoder,
    tokenizer, scheduler.
    """
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    unet.save_pretrained(root / "unet", safe_serialization=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for ch in letters:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (root / "tokenizer").mkdir(parents=True)
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(
        str(root / "tokenizer" / "vocab.json"),
        str(root / "tokenizer" / "merges.txt"),
        model_max_length=16,
    )
    tok.save_pretrained(root / "tokenizer")
    enc = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    enc.save_pretrained(root / "text_encoder", safe_serialization=True)
    DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def test_detect_on_a_diffusers_directory(tmp_path):
    pytest.importorskip("diffusers")
    sd = make_tiny_sd(tmp_path / "sd")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": p}) + "\n"
            for p in ["a cat", "a dog", "red car", "blue sky", "green tree", "old boat"]
        )
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("1\n1\n1\n0\n0\n0\n")
    r = runner.invoke(
        app,
        [
            "diffusion",
            "detect",
            "--model",
            str(sd),
            "--prompts",
            str(prompts),
            "--labels",
            str(labels),
            "--noises",
            "2",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["models"]["target"]["architecture"] == "diffusers pipeline"
    assert set(results["metrics"]) == {"combined", "noise_norm", "alignment", "wen"}
    # N and A computed straight from the pipeline's parts, on the same pure noise
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(sd / "unet").eval()
    enc = CLIPTextModel.from_pretrained(sd / "text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    rows = pq.read_table(tmp_path / "run" / "scores.parquet").to_pydict()
    with torch.no_grad():

        def embed(texts):
            ids = tok(texts, padding="max_length", max_length=16, truncation=True)["input_ids"]
            return enc(torch.tensor(ids))[0]

        cond = embed(rows["prompt"]).repeat_interleave(2, 0)  # --noises 2
        null = embed([""]).expand(len(cond), -1, -1)
        x = torch.randn(len(cond), 4, 8, 8, generator=torch.Generator().manual_seed(0))
        u, c = (unet(x, 999, encoder_hidden_states=h).sample.double() for h in (null, cond))
        N = (c - u).flatten(1).norm(dim=1).reshape(-1, 2).mean(1)
        u, c = (unet(x, 41, encoder_hidden_states=h).sample.double() for h in (null, cond))
        A = torch.cosine_similarity(u, c - u, dim=1).flatten(1).mean(1).reshape(-1, 2).mean(1)
    np.testing.assert_allclose(rows["noise_norm"], N.numpy(), rtol=1e-4)
    np.testing.assert_allclose(rows["alignment"], A.numpy(), rtol=1e-4, atol=1e-6)
    # every metric from the per-prompt scores; the fitted combined score within each half
    y, half = np.array(rows["label"]), np.array(rows["half"])
    for name in ("noise_norm", "alignment", "wen"):
        assert results["metrics"][name]["auc"]["value"] == pytest.approx(
            roc_auc_score(y, rows[name])
        )
    s = np.array(rows["combined"])
    assert results["metrics"]["combined"]["auc"]["value"] == pytest.approx(
        np.mean([roc_auc_score(y[half == k], s[half == k]) for k in (1, 2)])
    )


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_train_memorization_and_errors(tmp_path):
    r = runner.invoke(
        app,
        [
            "diffusion",
            "train",
            "--n",
            "10",
            "--steps",
            "4",
            "--width",
            "8",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "diffusion",
            "memorization",
            "--model",
            str(tmp_path / "m"),
            "--samples",
            "20",
            "--sampling-steps",
            "5",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "max R" in r.output and (tmp_path / "run" / "results.json").is_file()
    r = runner.invoke(
        app,
        [
            "diffusion",
            "train",
            "--n",
            "10",
            "--conditioning",
            "words",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert r.exit_code == 2 and "unknown conditioning 'words'" in r.stderr
    (tmp_path / "empty").mkdir()
    r = runner.invoke(
        app,
        ["diffusion", "train", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "y")],
    )
    assert r.exit_code == 2 and "no image files" in r.stderr
    r = runner.invoke(app, ["diffusion", "emm", "--sizes", "10,x"])
    assert r.exit_code == 2 and "--sizes" in r.stderr
    r = runner.invoke(app, ["diffusion", "emm", "--sizes", "10,5000", "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "5000 training images but digits has 1797" in r.stderr
    for args, message in [
        (["detect", "--weights", "paper"], "unknown weights 'paper'"),
        (["detect", "--alignment", "x0"], "unknown alignment 'x0'"),
    ]:
        r = runner.invoke(
            app, ["diffusion", *args, "--model", "m", "--prompts", "p", "--labels", "l"]
        )
        assert r.exit_code == 2 and message in r.stderr, r.output
    r = runner.invoke(app, ["diffusion", "memorization", "--model", "m", "--duplicates", "drop"])
    assert r.exit_code == 2 and "unknown duplicates 'drop'" in r.stderr
