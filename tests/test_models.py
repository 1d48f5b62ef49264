import json
import shutil

import pytest
import torch

from memaudit.errors import ModelLoadError
from memaudit.models import load_causal_lm
from memaudit.models.hf import model_fingerprint


def test_hub_id_and_missing_path_say_local_only(tmp_path):
    with pytest.raises(
        ModelLoadError, match="local directories only.*hub ids are never downloaded"
    ):
        load_causal_lm("gpt2")
    with pytest.raises(ModelLoadError, match="local directories only"):
        load_causal_lm(tmp_path / "absent")


def test_dir_without_weights_or_with_pickles_only(tmp_path, target_dir):
    d = tmp_path / "m"
    shutil.copytree(target_dir, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no .safetensors weights"):
        load_causal_lm(d)
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="pickle weights are never loaded"):
        load_causal_lm(d)


def test_remote_code_needs_the_flag(tmp_path, target_dir):
    d = tmp_path / "m"
    shutil.copytree(target_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_causal_lm(d)


def test_not_a_causal_lm(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(
        T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2)
    )
    model.save_pretrained(tmp_path / "t5")
    with pytest.raises(ModelLoadError, match="not a loadable causal LM"):
        load_causal_lm(tmp_path / "t5")


def test_fingerprint_follows_the_weights(tmp_path, target_dir, target):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "m"
    shutil.copytree(target_dir, d)
    assert model_fingerprint(d) == target.fingerprint
    weights = load_file(d / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(d) != target.fingerprint


def test_adapter_contract(target):
    assert target.tokenizer.pad_token is None  # handled: the engine pads and masks itself
    assert target.chunked and target.device.type == "cpu" and target.dtype == torch.float32
    ids = torch.tensor([target.encode(["def f(x):\n    return x"])[0]])
    mask = torch.ones_like(ids)
    h = target.hidden_states(ids, mask)
    torch.testing.assert_close(
        target.project(h[0]), target.logits(ids, mask)[0], atol=1e-5, rtol=1e-5
    )


def test_a_model_without_a_context_length_says_what_is_assumed(tmp_path, target_dir):
    import shutil

    from transformers import MambaConfig, MambaForCausalLM

    from memaudit.errors import MemauditWarning
    from memaudit.models.hf import TOKENIZER_FILES

    config = MambaConfig(vocab_size=512, hidden_size=16, num_hidden_layers=1, state_size=4)
    assert not any(hasattr(config, k) for k in ("n_positions", "max_position_embeddings"))
    torch.manual_seed(0)
    MambaForCausalLM(config).save_pretrained(tmp_path / "m", safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (target_dir / name).is_file():
            shutil.copy(target_dir / name, tmp_path / "m" / name)
    with pytest.warns(MemauditWarning, match="names no context length .*; assuming 2048"):
        lm = load_causal_lm(tmp_path / "m")
    assert lm.max_length == 2048 and lm.describe()["max_length_source"] == "assumed"
    assert load_causal_lm(target_dir).describe()["max_length_source"] == "n_positions"
