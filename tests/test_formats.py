"""Model formats and placement: PEFT adapters, GGUF files, device maps, weights that do not fit
their config, and the vocabulary projection's memory at a 256k vocabulary.

Every model is a tiny random-init transformers model built here; every expectation comes from
an independent computation (the merged model, the model's own forward, gguf's dequantizer).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError, ModelLoadError
from memaudit.models import load_causal_lm
from memaudit.models.hf import LoadOptions
from memaudit.scoring.engine import ScoreSettings, score_texts

peft = pytest.importorskip("peft")
gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")

runner = CliRunner()
N_HEAD, N_KV = 2, 1


def _llama(vocab: int, seed: int = 0, **changes):
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=N_HEAD,
        num_key_value_heads=N_KV,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        initializer_range=0.2,  # logits far from uniform, so a wrong weight shows
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**settings, **changes})).eval()


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def formats_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("formats")


@pytest.fixture(scope="session")
def llama_dir(tokenizer, formats_root) -> Path:
    """A random-init 2-layer Llama (GQA) with the session's BPE tokenizer."""
    return _save(_llama(len(tokenizer)), tokenizer, formats_root / "llama")


@pytest.fixture(scope="session")
def lora(llama_dir, tokenizer, formats_root) -> tuple[Path, Path]:
    """A LoRA adapter of ``llama_dir`` with non-zero B weights, and the merged model saved."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(llama_dir)
    torch.manual_seed(1)
    config = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,  # B random: the adapter changes the scores
    )
    adapted = get_peft_model(base, config)
    adapted.save_pretrained(formats_root / "adapter")
    merged = _save(adapted.merge_and_unload(), tokenizer, formats_root / "merged")
    return formats_root / "adapter", merged


def _scores(lm, texts):
    scores, _ = score_texts(lm, texts, ScoreSettings())
    return scores


def _same_scores(a, b, atol=1e-5):
    for name in ("logp", "mu", "sigma"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, rtol=0)


# -- adapters ---------------------------------------------------------------------------------


def test_adapter_scores_equal_the_merged_model_and_its_fingerprint_covers_both(
    llama_dir, lora, snippets
):
    adapter, merged = lora
    texts = snippets["members"][:6]
    with_adapter = load_causal_lm(llama_dir, adapter=adapter)
    reference = load_causal_lm(merged)
    base = load_causal_lm(llama_dir)
    _same_scores(_scores(with_adapter, texts), _scores(reference, texts))
    moved = np.nanmax(np.abs(_scores(with_adapter, texts).logp - _scores(base, texts).logp))
    assert moved > 1e-2  # the adapter is not a no-op
    assert with_adapter.chunked
    info = with_adapter.describe()
    assert info["adapter"]["path"] == str(adapter) and info["base_fingerprint"] == base.fingerprint
    assert with_adapter.fingerprint not in (base.fingerprint, reference.fingerprint)
    # another adapter of the same base is another scorer key
    other = Path(str(adapter) + "-copy")
    shutil.copytree(adapter, other)
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "adapter_model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] * 2
    save_file(weights, other / "adapter_model.safetensors")
    assert load_causal_lm(llama_dir, adapter=other).fingerprint != with_adapter.fingerprint


def test_mia_and_extract_take_an_adapter(llama_dir, lora, snippets, tmp_path):
    """Each command's numbers with ``--adapter`` are the merged model's own (its scores and its
    greedy continuations, computed here directly).
    """
    import pyarrow.parquet as pq

    from memaudit.models.generation import greedy_generate

    adapter, merged = lora
    texts = snippets["members"][:8]
    members = _jsonl(tmp_path / "m.jsonl", texts[:4])
    nonmembers = _jsonl(tmp_path / "n.jsonl", texts[4:])
    model = ["--model", str(llama_dir), "--adapter", str(adapter), "--device", "cpu"]
    model += ["--no-report", "--no-cache"]
    mia = ["mia", *model, "--members", str(members), "--nonmembers", str(nonmembers)]
    mia += ["--attacks", "loss", "--n-bootstrap", "2", "--out", str(tmp_path / "mia")]
    extract = ["extract", *model, "--data", str(members), "-k", "8", "-m", "8"]
    extract += ["--out", str(tmp_path / "extract")]
    for command in (mia, extract):
        r = runner.invoke(app, command)
        assert r.exit_code == 0, r.output
        header = json.loads((tmp_path / command[0] / "results.json").read_text())
        assert header["models"]["target"]["adapter"]["path"] == str(adapter)

    reference = load_causal_lm(merged)
    loss = pq.read_table(tmp_path / "mia" / "scores.parquet").column("loss").to_pylist()
    expected = [float(np.mean(t.logp)) for t in _scores(reference, texts)]
    np.testing.assert_allclose(loss, expected, atol=1e-5, rtol=0)
    ids = reference.encode(texts[:4])
    continuations = greedy_generate(reference, [t[:8] for t in ids], 8)
    generated = pq.read_table(tmp_path / "extract" / "scores.parquet").column("generated")
    assert generated.to_pylist() == [reference.tokenizer.decode(g) for g in continuations]


def _jsonl(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_adapters_that_do_not_fit_are_one_line_errors(llama_dir, lora, tokenizer, tmp_path):
    adapter, _ = lora

    def copy(name: str, **config) -> Path:
        d = tmp_path / name
        shutil.copytree(adapter, d)
        cfg = json.loads((d / "adapter_config.json").read_text())
        (d / "adapter_config.json").write_text(json.dumps({**cfg, **config}))
        return d

    pickled = copy("pickled")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    other_name = copy("named", base_model_name_or_path="meta-llama/Llama-3.2-1B")
    same_name = copy("hub", base_model_name_or_path="someone/llama")  # the base dir's name
    wider = _save(_llama(len(tokenizer), hidden_size=48), tokenizer, tmp_path / "wider")
    shallower = _save(_llama(len(tokenizer), num_hidden_layers=1), tokenizer, tmp_path / "short")
    gpt2 = tmp_path / "gpt2"
    _save(_gpt2(len(tokenizer)), tokenizer, gpt2)
    unnamed = copy("unnamed", base_model_name_or_path=None)
    retokenized = copy("retokenized")
    from memaudit.lab.lm import train_bpe_tokenizer

    train_bpe_tokenizer(["def f(x):\n    return x\n"] * 4, vocab_size=280).save_pretrained(
        retokenized
    )
    truncated = copy("truncated")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    bad_tokenizer = copy("bad_tokenizer")
    (bad_tokenizer / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {}}}')
    truncated_base = tmp_path / "truncated_base"
    shutil.copytree(llama_dir, truncated_base)
    base_weights = next(truncated_base.glob("*.safetensors"))
    base_weights.write_bytes(base_weights.read_bytes()[:100])
    cases = [
        (llama_dir, pickled, "no adapter_model.safetensors .*pickle weights are never loaded"),
        (llama_dir, tmp_path / "absent", "not a local adapter directory"),
        (llama_dir, other_name, "names base 'meta-llama/Llama-3.2-1B', not"),
        (wider, unnamed, "does not fit the base .*size mismatch"),
        (shallower, unnamed, "does not fit the base .*adapted tensor.* the base lacks"),
        (gpt2, unnamed, "does not fit the base .*not found"),
        (llama_dir, retokenized, "carries a tokenizer whose vocabulary differs"),
        (llama_dir, truncated, "adapter_model.safetensors: not a valid safetensors file"),
        (llama_dir, bad_tokenizer, "cannot load its tokenizer"),
        (truncated_base, unnamed, r"\.safetensors: not a valid safetensors file"),
    ]
    for base, bad, message in cases:
        with pytest.raises(ModelLoadError, match=message) as e:
            load_causal_lm(base, adapter=bad)
        assert "\n" not in str(e.value)
    assert load_causal_lm(llama_dir, adapter=same_name).adapter == same_name


def test_an_adapter_error_leaves_no_run_dir(llama_dir, lora, snippets, tmp_path):
    members = _jsonl(tmp_path / "m.jsonl", snippets["members"][:4])
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        ["extract", "--model", str(llama_dir), "--adapter", str(tmp_path / "nope")]
        + ["--data", str(members), "-k", "4", "-m", "4", "--out", str(out)],
    )
    assert r.exit_code == 2 and "not a local adapter directory" in r.output
    assert not out.exists()


def _gpt2(vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2)).eval()


# -- weights that do not fit the config -------------------------------------------------------


def test_weights_of_another_architecture_or_shape_are_refused(llama_dir, tokenizer, tmp_path):
    gpt2 = _save(_gpt2(len(tokenizer)), tokenizer, tmp_path / "gpt2-weights")
    shutil.copy(llama_dir / "config.json", gpt2 / "config.json")  # says Llama, holds GPT-2
    reshaped = tmp_path / "reshaped"
    shutil.copytree(llama_dir, reshaped)
    cfg = json.loads((reshaped / "config.json").read_text())
    (reshaped / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    cases = [
        (gpt2, "do not fit config.json's LlamaForCausalLM: .* missing from the safetensors"),
        (reshaped, r"do not fit config.json's LlamaForCausalLM: .* another shape.*\(file"),
    ]
    for path, message in cases:
        with pytest.raises(ModelLoadError, match=message) as e:
            load_causal_lm(path)
        assert "\n" not in str(e.value)


# -- device maps ------------------------------------------------------------------------------


def test_device_map_auto_scores_as_the_plain_path(llama_dir, snippets):
    texts = snippets["members"][:4]
    mapped = load_causal_lm(llama_dir, LoadOptions(device_map="auto"))
    plain = load_causal_lm(llama_dir, LoadOptions(device="cpu"))
    assert mapped.device == plain.device and mapped.chunked
    assert mapped.describe()["device_map"]["strategy"] == "auto"
    _same_scores(_scores(mapped, texts), _scores(plain, texts), atol=0)


def test_device_map_needs_accelerate_and_no_device(monkeypatch, llama_dir, snippets, tmp_path):
    with pytest.raises(InputError, match="drop --device cpu"):
        LoadOptions(device="cpu", device_map="auto")
    with pytest.raises(InputError, match="unknown device map 'everywhere'"):
        LoadOptions(device_map="everywhere")
    monkeypatch.setitem(sys.modules, "accelerate", None)  # import accelerate now fails
    with pytest.raises(ModelLoadError, match=r"needs accelerate.*memaudit\[accelerate\]"):
        LoadOptions(device_map="auto")
    members = _jsonl(tmp_path / "m.jsonl", snippets["members"][:4])
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        ["mia", "--model", str(llama_dir), "--members", str(members), "--nonmembers"]
        + [str(members), "--device-map", "auto", "--out", str(out)],
    )
    assert r.exit_code == 2 and "needs accelerate" in r.output and not out.exists()


# -- the vocabulary projection at 256k --------------------------------------------------------

BIG_VOCAB = 262_144
PROJECTION_MB = 24


def _peak_mb(fn) -> float:
    """Peak of the bytes torch allocates on the CPU while ``fn`` runs (profiler's allocation
    events, in time order: allocations positive, frees negative).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    peak = live = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    return peak / 2**20


def test_projection_memory_at_a_256k_vocabulary_does_not_grow_with_batch(tokenizer, tmp_path):
    """The documented bound (docs/models.md): scoring allocates at most ``projection_mb`` beyond
    the model for the vocabulary projection, whatever batch x length; full logits of the large
    case would need 10x that.
    """
    lm = load_causal_lm(
        _save(
            _llama(BIG_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1),
            tokenizer,
            tmp_path / "big",
        ),
        LoadOptions(device="cpu"),
    )
    assert lm.chunked and lm.vocab_size == BIG_VOCAB
    rng = np.random.default_rng(0)
    settings = ScoreSettings(projection_mb=PROJECTION_MB, batch_tokens=1024)

    def run(n_texts: int, length: int):
        ids = rng.integers(0, BIG_VOCAB, (n_texts, length)).tolist()
        texts = [f"{n_texts}-{length}-{i}" for i in range(n_texts)]
        return lambda: score_texts(lm, texts, settings, token_ids=ids)

    small = _peak_mb(run(1, 16))
    large = _peak_mb(run(4, 64))  # 252 scored positions in one batch
    full_logits_mb = 4 * 63 * BIG_VOCAB * 4 / 2**20
    assert small <= PROJECTION_MB and large <= PROJECTION_MB, (small, large)
    assert large < small + 4 and full_logits_mb > 10 * PROJECTION_MB
    # and the chunks compute what full logits would (the small case: 15 x 256k floats)
    ids = torch.tensor([rng.integers(0, BIG_VOCAB, 16).tolist()])
    scores = score_texts(lm, ["direct"], settings, token_ids=ids.tolist())[0].text(0)
    logp = torch.log_softmax(lm.model(ids).logits[0, :-1].float(), -1)
    expected = logp.gather(1, ids[0, 1:, None])[:, 0].detach().numpy()
    np.testing.assert_allclose(scores.logp, expected, atol=1e-5, rtol=0)


# -- GGUF -------------------------------------------------------------------------------------


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order for RoPE (convert_hf_to_gguf.py); transformers undoes it."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_llama_gguf(model, tokenizer, path: Path, *, quantize: bool, arch: str = "llama"):
    """``model`` as llama.cpp writes it: metadata, a byte-level BPE vocabulary (``gpt2``), and
    tensors in F32 (1-D) and Q8_0 or F16 (matrices). Returns the float32 weights the file
    holds, dequantized by gguf itself, under the transformers names.
    """
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    cfg = model.config
    writer = GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    theta = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
    writer.add_rope_freq_base(theta)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_tokens)
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in special else 1 for t, _ in vocab])  # 3: control
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    held = {}
    for name, tensor in model.state_dict().items():
        w = tensor.detach().float().numpy()
        if "q_proj" in name:
            w = _permute(w, cfg.num_attention_heads)
        elif "k_proj" in name:
            w = _permute(w, cfg.num_key_value_heads)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if w.ndim == 1:
            stored, kind = w, GGMLQuantizationType.F32
        elif quantize:
            stored, kind = quants.quantize(w, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
        else:
            stored, kind = w.astype(np.float16), GGMLQuantizationType.F16
        writer.add_tensor(gguf_name, stored, raw_dtype=kind)
        value = quants.dequantize(stored, kind).reshape(w.shape).astype(np.float32)
        if "q_proj" in name or "k_proj" in name:  # back to transformers' row order
            heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
            value = _unpermute(value, heads)
        held[name] = torch.from_numpy(value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


@pytest.fixture(scope="session")
def gguf_file(tokenizer, formats_root):
    """A Q8_0 GGUF of a random Llama, a torch model holding exactly the file's values, and the
    float weights it was quantized from.
    """
    model = _llama(len(tokenizer), seed=2)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    path = formats_root / "tiny.gguf"
    model.load_state_dict(write_llama_gguf(model, tokenizer, path, quantize=True))
    return path, model, original


def test_gguf_converts_to_a_model_dir_whose_logits_are_the_dequantized_files(
    gguf_file, tokenizer, snippets, tmp_path
):
    path, reference, original = gguf_file
    out = tmp_path / "converted"
    r = runner.invoke(app, ["convert", "gguf", str(path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "memaudit_convert.json").read_text())
    assert record["dequantized"] and record["converted_from"] == str(path.resolve())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["tensor_types"]["Q8_0"] == 2 + 7 * 2  # embeddings, head, 7 matrices a layer
    lm = load_causal_lm(out, LoadOptions(device="cpu"))
    text = snippets["members"][3]
    ids = lm.encode([text])[0]
    assert ids == tokenizer(text)["input_ids"]  # the vocabulary came through the metadata
    x = torch.tensor([ids[:64]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(x).logits, reference(x).logits, atol=1e-5, rtol=1e-5)
    # the quantization mattered: the file holds other values than the float weights it came from
    up = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(lm.model.state_dict()[up], original[up])
    # the same conversion again is fine; another dtype replaces it only with --overwrite
    assert runner.invoke(app, ["convert", "gguf", str(path), "--out", str(out)]).exit_code == 0
    again = ["convert", "gguf", str(path), "--out", str(out), "--dtype", "float16"]
    r = runner.invoke(app, again)
    assert r.exit_code == 2 and "holds a conversion of another file or dtype" in r.stderr
    assert json.loads((out / "memaudit_convert.json").read_text())["dtype"] == record["dtype"]
    # mia and extract take the converted dir like any other
    data = _jsonl(tmp_path / "d.jsonl", snippets["members"][:6])
    other = _jsonl(tmp_path / "o.jsonl", snippets["nonmembers"][:6])
    common = ["--model", str(out), "--device", "cpu", "--no-report", "--no-cache"]
    r = runner.invoke(
        app,
        ["mia", *common, "--members", str(data), "--nonmembers", str(other), "--attacks"]
        + ["loss", "--n-bootstrap", "2", "--out", str(tmp_path / "mia")],
    )
    assert r.exit_code == 0, r.output
    extract = ["extract", *common, "--data", str(data), "-k", "8", "-m", "8"]
    r = runner.invoke(app, [*extract, "--out", str(tmp_path / "extract")])
    assert r.exit_code == 0, r.output


def test_gguf_bad_input_is_one_line_and_writes_nothing(tokenizer, tmp_path):
    rwkv = tmp_path / "rwkv.gguf"
    write_llama_gguf(_llama(len(tokenizer)), tokenizer, rwkv, quantize=False, arch="rwkv7")
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    (tmp_path / "a_dir.gguf").mkdir()
    cases = [
        (rwkv, "cannot load GGUF architecture 'rwkv7'"),
        (not_gguf, "not a GGUF file"),
        (tmp_path / "absent.gguf", "no such file"),
        (tmp_path / "a_dir.gguf", "a directory, not a .gguf file"),
    ]
    for file, message in cases:
        out = tmp_path / f"out-{file.stem}"
        r = runner.invoke(app, ["convert", "gguf", str(file), "--out", str(out)])
        assert r.exit_code == 2 and message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not out.exists()
