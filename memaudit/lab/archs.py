"""Random-initialised models of the common causal-LM architectures, saved as local model dirs.

Real audits load pretrained checkpoints (Pythia, Llama, Mistral, Qwen, Gemma, Phi, OPT,
OLMo, Falcon, Mamba); none can be downloaded here, and the correctness and speed of
memaudit's plumbing (scoring, generation, unlearning) do not depend on trained weights.
So the architecture tests and benchmarks build each architecture's config in code at a
named size, initialise it from a seed, and save it with a byte-level BPE tokenizer as a
safetensors model dir that every command loads like a downloaded one.

``ARCHITECTURES`` names the configs. ``granite`` scales its logits after the output
projection in a way memaudit does not reproduce, so it takes the full-logits path; two
variants test the loading path rather than the model: ``llama_bos`` (a tokenizer that adds
a BOS token, as Llama's do) and ``sharded`` (a Llama saved in several safetensors shards).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memaudit.errors import InputError

from .lm import EOS

BOS = "<s>"  # the BOS token the llama_bos tokenizer adds


@dataclass(frozen=True)
class ArchSize:
    """The shape of every architecture's config at one size (a config takes what it has)."""

    hidden: int
    layers: int
    heads: int
    context: int


ARCH_SIZES = {
    "test": ArchSize(hidden=32, layers=2, heads=2, context=256),  # the test suite: milliseconds
    "bench": ArchSize(hidden=128, layers=2, heads=4, context=512),  # CPU benchmark
}


# OPT and Mamba at their default init decode one token over and over, which would hide a
# broken cache from a test of greedy decoding; this wider init makes their outputs vary.
WIDE_INIT = 0.5


def _attention(s: ArchSize, vocab: int, eos: int) -> dict[str, Any]:
    """The keys the Llama family of configs share."""
    return dict(
        vocab_size=vocab,
        hidden_size=s.hidden,
        intermediate_size=2 * s.hidden,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=max(1, s.heads // 2),  # grouped-query attention, as the real ones
        max_position_embeddings=s.context,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=None,
        tie_word_embeddings=False,
    )


def _config(arch: str, s: ArchSize, vocab: int, eos: int):
    import transformers as tf

    llama_like = _attention(s, vocab, eos)
    head_dim = s.hidden // s.heads
    builders: dict[str, Callable[[], Any]] = {
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=s.hidden,
            intermediate_size=2 * s.hidden,
            num_hidden_layers=s.layers,
            num_attention_heads=s.heads,
            max_position_embeddings=s.context,  # rotary on a quarter of each head: Pythia's
            bos_token_id=eos,
            eos_token_id=eos,
        ),
        "llama": lambda: tf.LlamaConfig(**llama_like),
        "mistral": lambda: tf.MistralConfig(**llama_like, sliding_window=s.context // 4),
        "qwen2": lambda: tf.Qwen2Config(**llama_like),
        "gemma2": lambda: tf.Gemma2Config(
            **llama_like,
            head_dim=head_dim,
            query_pre_attn_scalar=head_dim,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
            sliding_window=s.context // 4,
        ),
        "phi3": lambda: tf.Phi3Config(**llama_like),
        "opt": lambda: tf.OPTConfig(
            vocab_size=vocab,
            hidden_size=s.hidden,
            ffn_dim=2 * s.hidden,
            num_hidden_layers=s.layers,
            num_attention_heads=s.heads,
            max_position_embeddings=s.context,
            word_embed_proj_dim=s.hidden,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            dropout=0.0,
            init_std=WIDE_INIT,
        ),
        "mamba": lambda: tf.MambaConfig(
            vocab_size=vocab,
            hidden_size=s.hidden,
            state_size=8,
            num_hidden_layers=s.layers,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            initializer_range=WIDE_INIT,
        ),
        "olmo2": lambda: tf.Olmo2Config(**llama_like),
        "falcon": lambda: tf.FalconConfig(
            vocab_size=vocab,
            hidden_size=s.hidden,
            num_hidden_layers=s.layers,
            num_attention_heads=s.heads,
            max_position_embeddings=s.context,
            bos_token_id=eos,
            eos_token_id=eos,
        ),
        "qwen3": lambda: tf.Qwen3Config(**llama_like, head_dim=head_dim),
        "mamba2": lambda: tf.Mamba2Config(
            vocab_size=vocab,
            hidden_size=s.hidden,
            num_hidden_layers=s.layers,
            state_size=16,
            expand=2,
            head_dim=16,
            num_heads=2 * s.hidden // 16,  # num_heads x head_dim = expand x hidden
            n_groups=1,
            chunk_size=32,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        # logits divided by logits_scaling after the head: not a projection memaudit knows,
        # so it is scored from the model's own full logits (``chunked_projection`` false)
        "granite": lambda: tf.GraniteConfig(**llama_like, logits_scaling=4.0),
    }
    builders["llama_bos"] = builders["llama"]
    builders["sharded"] = builders["llama"]
    if arch not in builders:
        raise InputError(f"unknown architecture '{arch}' (known: {', '.join(builders)})")
    return builders[arch]()


ARCHITECTURES = (
    "gpt_neox",
    "llama",
    "mistral",
    "qwen2",
    "gemma2",
    "phi3",
    "opt",
    "mamba",
    "olmo2",
    "falcon",
    "qwen3",
    "mamba2",
    "granite",
    "llama_bos",
    "sharded",
)


def bos_tokenizer(tokenizer):
    """A copy of a byte-level BPE tokenizer that prepends a ``<s>`` BOS token to every text,
    through its post-processor, as Llama 3's ``tokenizer.json`` does.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.add_special_tokens([BOS])
    bos = backend.token_to_id(BOS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=EOS
    )


def build_arch_model(arch: str, tokenizer, *, size: str = "test", seed: int = 0):
    """A freshly initialised (float32, seeded) causal LM of ``arch`` at a named size, sized to
    ``tokenizer``'s vocabulary.
    """
    from transformers import AutoModelForCausalLM

    if size not in ARCH_SIZES:
        raise InputError(f"unknown size '{size}' (known: {', '.join(ARCH_SIZES)})")
    config = _config(arch, ARCH_SIZES[size], len(tokenizer), tokenizer.convert_tokens_to_ids(EOS))
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def save_arch_dir(
    arch: str, tokenizer, out: str | Path, *, size: str = "test", seed: int = 0
) -> Path:
    """``build_arch_model`` saved with its tokenizer as a safetensors model dir ``out``.

    ``llama_bos`` gets ``bos_tokenizer(tokenizer)``; ``sharded`` is written in shards of
    at most a sixth of its weights (at least two files).
    """
    out = Path(out)
    if arch == "llama_bos":
        tokenizer = bos_tokenizer(tokenizer)
    model = build_arch_model(arch, tokenizer, size=size, seed=seed)
    shard = None
    if arch == "sharded":
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        shard = f"{max(1, weight_bytes // 6 // 1000)}KB"
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    tokenizer.save_pretrained(out)
    return out
