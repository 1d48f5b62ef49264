"""Hugging Face causal LMs from a local directory: safetensors only, no hub, no remote code by
default.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memaudit.errors import InputError, MemauditWarning, ModelLoadError
from memaudit.io.config import check_bos_rule

from .weights import check_safetensors

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's strategies


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model. ``"auto"``: CUDA when present; bf16 on CUDA, fp32 on CPU.

    ``device_map`` (``"auto"``, ...) spreads the layers over every GPU, then the CPU, with
    accelerate, for models larger than one device; ``device`` then stays ``"auto"``.

    ``bos``: the BOS rule of :meth:`HFCausalLM.encode` (:class:`BosRule`).
    """

    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    device_map: str | None = None
    bos: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", *DTYPES):
            raise InputError(f"unknown dtype '{self.dtype}'; use auto, {', '.join(DTYPES)}")
        check_bos_rule(self.bos)
        if self.device_map is None:
            return
        if self.device_map not in DEVICE_MAPS:
            raise InputError(
                f"unknown device map '{self.device_map}'; use {', '.join(DEVICE_MAPS)}"
            )
        if self.device != "auto":
            raise InputError(
                f"--device-map {self.device_map} places the model itself; drop --device "
                f"{self.device}"
            )
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise ModelLoadError(
                "--device-map needs accelerate, which is not installed: "
                "pip install 'memaudit[accelerate]'"
            ) from None

    def resolve_device(self) -> torch.device:
        return resolve_device(self.device)

    def resolve_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]


def resolve_device(name: str) -> torch.device:
    """``name`` as a device this machine has (``"auto"``: CUDA when present, else the CPU).

    Raises
    ------
    InputError
        A name torch does not know, or a device this machine does not have (``cuda``
        without a GPU, ``cuda:3`` with one): checked by placing an empty tensor there, so
        the error comes before any work rather than at the first forward pass.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N, mps)") from e
    if device.type == "meta":
        raise InputError("device 'meta' holds no weights; use auto, cpu, cuda, cuda:N, mps")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # torch asserts when built without CUDA
        reason = (str(e).strip() or type(e).__name__).splitlines()[0].split(". ")[0][:120]
        raise InputError(f"device '{name}' is not available on this machine ({reason})") from e
    return device


def load_causal_lm(
    path: str | os.PathLike,
    options: LoadOptions | None = None,
    *,
    adapter: str | os.PathLike | None = None,
) -> HFCausalLM:
    """Load a causal LM and its tokenizer from a local directory.

    Parameters
    ----------
    path : path-like
        A directory holding ``config.json``, ``*.safetensors`` weights and tokenizer files.
    options : LoadOptions, optional
        dtype, device (or device map) and the remote-code flag.
    adapter : path-like, optional, keyword-only
        A local PEFT adapter directory (``adapter_config.json``, ``adapter_model.safetensors``)
        made for this base; merged into the weights on load (:mod:`memaudit.models.peft_adapters`).

    Raises
    ------
    ModelLoadError
        The path is not a local directory (hub ids are never downloaded), has no
        safetensors weights, needs remote code without the flag, is not a causal LM, or holds
        weights that do not fit its config; or the adapter does not fit the base.
    """
    options = options or LoadOptions()
    model_dir = _check_model_dir(Path(path), options)
    adapter_dir = None
    if adapter is not None:
        from .peft_adapters import check_adapter_dir

        adapter_dir = Path(adapter)
        check_adapter_dir(adapter_dir, model_dir)  # before any weights are read
    from transformers import AutoModelForCausalLM

    device = options.resolve_device()
    dtype = options.resolve_dtype(device)
    model = _from_pretrained(AutoModelForCausalLM, model_dir, options, dtype, "causal LM")
    tokenizer = load_tokenizer(model_dir, trust_remote_code=options.trust_remote_code)
    if adapter_dir is not None:
        from .peft_adapters import merge_adapter

        _check_adapter_tokenizer(adapter_dir, tokenizer)
        model = merge_adapter(model, adapter_dir, model_dir)
    if options.device_map is None:
        model.to(device)
    else:
        _outputs_on_input_device(model)
    model.eval()
    bos = BosRule.of(tokenizer, options.bos, model_dir=model_dir)
    return HFCausalLM(
        model,
        tokenizer,
        model_dir=model_dir,
        dtype=dtype,
        adapter=adapter_dir,
        device_map=options.device_map,
        bos=bos,
    )


def wrap_loaded(
    model: Any, tokenizer: Any, options: LoadOptions | None = None, *, name: str
) -> HFCausalLM:
    """A transformers causal LM and tokenizer already in memory, behind the same adapter as a
    loaded directory.

    The model is scored where it is and in its own dtype (``options``' device and dtype must
    be ``auto``; move it first with ``model.to(...)``); it is put in eval mode. Its
    fingerprint is :func:`state_fingerprint` (config and every tensor, so a fine-tuned copy
    gets another one and the score cache keeps the two apart), its tokenizer's
    :func:`tokenizer_state_fingerprint`. ``name`` is what ``describe()["path"]`` shows.

    Raises
    ------
    ModelLoadError
        Not a causal LM with an output projection, a tokenizer that cannot encode, or device,
        dtype or device map settings an in-memory model cannot take.
    """
    options = options or LoadOptions()
    if options.device != "auto" or options.dtype != "auto" or options.device_map is not None:
        raise ModelLoadError(
            f"{name}: an in-memory model is scored on its own device and in its own dtype; "
            "move it first (model.to(...)) and leave device, dtype and device_map unset"
        )
    if not callable(getattr(model, "get_output_embeddings", None)) or not callable(tokenizer):
        raise ModelLoadError(
            f"{name}: expected a transformers causal LM (with an output projection) and its "
            f"tokenizer, got {type(model).__name__} and {type(tokenizer).__name__}"
        )
    if model.get_output_embeddings() is None:
        raise ModelLoadError(f"{name}: {type(model).__name__} has no output projection")
    model.eval()
    dtype = next(model.parameters()).dtype
    label = Path(name)
    return HFCausalLM(
        model,
        tokenizer,
        model_dir=label,
        dtype=dtype,
        bos=BosRule.of(tokenizer, options.bos, model_dir=label),
        fingerprints=(state_fingerprint(model), tokenizer_state_fingerprint(tokenizer)),
    )


def state_fingerprint(model: Any) -> str:
    """sha256 over a model's config and every tensor of its state dict, in name order (name,
    dtype, shape, bytes): the fingerprint of a model that has no directory.
    """
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_state_fingerprint(tokenizer: Any) -> str:
    """sha256 over the files a tokenizer saves (``save_pretrained`` into a temp dir): what
    :func:`tokenizer_fingerprint` hashes for a directory, for a tokenizer in memory.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="memaudit-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        return tokenizer_fingerprint(Path(tmp))


def _from_pretrained(
    auto_class: Any, model_dir: Path, options: LoadOptions, dtype: torch.dtype, kind: str
) -> Any:
    """``auto_class.from_pretrained`` under memaudit's rules, refusing weights that do not fit
    the config: transformers would initialise missing tensors at random and score noise.

    With a device map, accelerate places the layers. transformers 5 always builds the model on
    the meta device and fills it tensor by tensor (what ``low_cpu_mem_usage`` did in 4.x), so a
    model never needs twice its size in CPU memory.
    """
    kwargs: dict[str, Any] = dict(
        local_files_only=True,
        trust_remote_code=options.trust_remote_code,
        use_safetensors=True,
        dtype=dtype,
        output_loading_info=True,
        ignore_mismatched_sizes=True,  # reported below as one line, not as a table and a raise
    )
    if options.device_map is not None:
        kwargs["device_map"] = options.device_map
    try:
        model, info = auto_class.from_pretrained(model_dir, **kwargs)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise ModelLoadError(f"{model_dir}: not a loadable {kind} ({_first_line(e)})") from e
    architecture = type(model).__name__
    if info.get("mismatched_keys"):
        first = sorted(info["mismatched_keys"], key=str)[0]  # (name, file shape, config shape)
        name, shapes = (first[0], first[1:]) if isinstance(first, tuple) else (first, ())
        found = f" (file {tuple(shapes[0])}, config {tuple(shapes[1])})" if len(shapes) == 2 else ""
        raise ModelLoadError(
            f"{model_dir}: its weights do not fit config.json's {architecture}: "
            f"{len(info['mismatched_keys'])} tensor(s) of another shape, e.g. {name}{found}"
        )
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelLoadError(
            f"{model_dir}: its weights do not fit config.json's {architecture}: {len(missing)} "
            f"tensor(s) missing from the safetensors, e.g. {missing[0]} (weights of another "
            "architecture?)"
        )
    return model


def load_masked_lm(path: str | os.PathLike, options: LoadOptions | None = None) -> tuple[Any, Any]:
    """A masked LM (BERT/RoBERTa-style) and its tokenizer from a local directory, under the
    same rules as :func:`load_causal_lm` (local, safetensors, remote code behind the flag).

    Returns the transformers model (eval mode, on ``options``' device) and a fast tokenizer
    (its offsets say which characters each token covers).

    Raises
    ------
    ModelLoadError
        As :func:`load_causal_lm`, or the directory holds no masked LM or no fast tokenizer.
    """
    options = options or LoadOptions()
    model_dir = _check_model_dir(Path(path), options)
    from transformers import AutoModelForMaskedLM

    device = options.resolve_device()
    dtype = options.resolve_dtype(device)
    model = _from_pretrained(AutoModelForMaskedLM, model_dir, options, dtype, "masked LM")
    tokenizer = load_tokenizer(model_dir, trust_remote_code=options.trust_remote_code)
    if not getattr(tokenizer, "is_fast", False) or tokenizer.mask_token_id is None:
        raise ModelLoadError(f"{model_dir}: a masked LM needs a fast tokenizer with a mask token")
    if options.device_map is None:
        model.to(device)
    model.eval()
    return model, tokenizer


def load_tokenizer(path: str | os.PathLike, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a local model (or tokenizer-only) directory; never downloads."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir() or not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{p}: not a local directory with tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, "
            "...)"
        )
    try:
        return AutoTokenizer.from_pretrained(
            p, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as e:  # the tokenizers library raises plain Exceptions for a bad vocab
        if isinstance(e, MemoryError):
            raise
        raise ModelLoadError(f"{p}: cannot load its tokenizer ({_first_line(e)})") from e


def _check_model_dir(p: Path, options: LoadOptions) -> Path:
    if not p.is_dir():
        hint = (
            " (hub ids are never downloaded)"
            if not p.exists() and not str(p).startswith((".", "/", "~"))
            else ""
        )
        raise ModelLoadError(
            f"{p}: not a local model directory; models are loaded from local directories only{hint}"
        )
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"{p}: no config.json; not a Hugging Face model directory")
    if not list(p.glob("*.safetensors")):
        pickles = [f.name for f in p.glob("*.bin")] + [f.name for f in p.glob("*.pt")]
        found = f" (found {', '.join(pickles)}: pickle weights are never loaded)" if pickles else ""
        raise ModelLoadError(f"{p}: no .safetensors weights{found}")
    check_safetensors(sorted(p.glob("*.safetensors")))
    config = _read_json(p / "config.json")
    if config.get("auto_map") and not options.trust_remote_code:
        raise ModelLoadError(
            f"{p}: this model needs its own code; pass --trust-remote-code if you trust it"
        )
    return p


@dataclass(frozen=True)
class BosRule:
    """Whether every encoded text starts with a BOS id (docs/mia.md, "The BOS rule").

    The first id of a text is never scored (nothing precedes it), so the rule decides
    whether the first real token is: ``auto`` keeps the tokenizer's own encoding (Llama's
    add a BOS, GPT-2's and GPT-NeoX's do not; what MIMIR and the Min-K% code score),
    ``always`` prepends ``bos_id`` to a text that does not start with it (the tokenizer's
    BOS, or its end-of-text token when it has no BOS, as GPT-2's), ``never`` strips the BOS
    the tokenizer adds.

    Parameters
    ----------
    rule : {"auto", "always", "never"}
    tokenizer_adds : bool
        The tokenizer's own encoding puts ``bos_id`` before every text.
    bos_id : int or None
        The id ``always`` prepends and ``never`` strips; None: the tokenizer has neither a
        BOS nor an end-of-text token.
    bos_token : str or None
    """

    rule: str = "auto"
    tokenizer_adds: bool = False
    bos_id: int | None = None
    bos_token: str | None = None

    @classmethod
    def of(cls, tokenizer: Any, rule: str, *, model_dir: Path) -> BosRule:
        """The rule for ``tokenizer``: whether it adds a BOS itself is seen by encoding one
        text with and without its special tokens.

        Raises
        ------
        InputError
            ``always`` for a tokenizer with neither a BOS nor an end-of-text token.
        """
        check_bos_rule(rule)
        own = tokenizer("a", verbose=False)["input_ids"]
        plain = tokenizer("a", add_special_tokens=False, verbose=False)["input_ids"]
        adds = len(own) > len(plain) and own[1 : 1 + len(plain)] == plain
        bos_id = own[0] if adds else tokenizer.bos_token_id
        if bos_id is None:
            bos_id = tokenizer.eos_token_id
        if rule == "always" and bos_id is None:
            raise InputError(
                f"{model_dir}: its tokenizer has neither a BOS nor an end-of-text token, so "
                "--bos always has nothing to prepend"
            )
        token = None if bos_id is None else tokenizer.convert_ids_to_tokens(int(bos_id))
        return cls(rule, adds, None if bos_id is None else int(bos_id), token)

    @property
    def starts_with_bos(self) -> bool:
        """Every encoded text starts with ``bos_id``."""
        return self.rule == "always" or (self.rule == "auto" and self.tokenizer_adds)

    def apply(self, ids: list[list[int]]) -> list[list[int]]:
        """The tokenizer's own encodings ``ids`` under this rule."""
        if self.rule == "never" and self.tokenizer_adds:
            return [t[1:] for t in ids]
        bos = self.bos_id
        if self.rule == "always" and not self.tokenizer_adds and bos is not None:
            return [t if t[:1] == [bos] else [bos, *t] for t in ids]
        return ids

    def key(self) -> str:
        """What the rule does to token ids, for the scoring cache key: rules that give the same
        ids (``auto`` and ``always`` on a tokenizer that adds a BOS) share cached scores.
        """
        return f"bos:{self.bos_id}" if self.starts_with_bos else "no-bos"

    def describe(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "texts_start_with_bos": self.starts_with_bos,
            "bos_id": self.bos_id,
            "bos_token": self.bos_token,
            "tokenizer_adds_bos": self.tokenizer_adds,
        }


class HFCausalLM:
    """A transformers causal LM behind the :class:`~memaudit.models.base.CausalLM` contract."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_dir: Path,
        dtype: torch.dtype,
        adapter: Path | None = None,
        device_map: str | None = None,
        bos: BosRule | None = None,
        fingerprints: tuple[str, str] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.bos = bos or BosRule.of(tokenizer, "auto", model_dir=model_dir)
        self.bos_key = self.bos.key()
        self.name = str(model_dir)
        self.dtype = dtype
        self.device = _input_device(model)
        # the strategy asked for and where accelerate put each module (all on one device when
        # the model fits it: then no hooks, and the plain path's numbers)
        self.device_map = None
        if device_map is not None:
            placement = _placement(model) or {"": str(self.device)}
            self.device_map = {"strategy": device_map, "placement": placement}
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.max_length, self.max_length_source = _context_length(model.config, model_dir)
        self.adapter = adapter
        # (model, tokenizer) fingerprints of a model that has no directory (``wrap_loaded``)
        model_fp, tokenizer_fp = fingerprints or (None, None)
        self.fingerprint = model_fp or model_fingerprint(model_dir)
        if adapter is not None:  # base + adapter: the scorer key of what is actually scored
            self.base_fingerprint = self.fingerprint
            self.adapter_fingerprint = adapter_fingerprint(adapter)
            both = f"{self.base_fingerprint}+{self.adapter_fingerprint}".encode()
            self.fingerprint = hashlib.sha256(both).hexdigest()[:16]
        self.tokenizer_fingerprint = tokenizer_fp or tokenizer_fingerprint(model_dir)
        self.n_params = sum(p.numel() for p in model.parameters())
        # float32 copy of the output projection, made on first use
        self._w32: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.chunked = self._projection_matches_forward()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text: the tokenizer's own encoding under the BOS rule."""
        return self.bos.apply(self.tokenizer(list(texts), verbose=False)["input_ids"])

    @torch.no_grad()
    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        if not self.chunked:
            raise RuntimeError(
                "this architecture's logits are not a plain projection; use logits()"
            )
        out = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state  # (B, T, D)

    @torch.no_grad()
    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._w32 is None:
            head = self.model.get_output_embeddings()
            bias = getattr(head, "bias", None)
            # on the inputs' device (a device map may have put the head on another GPU); the
            # same tensor, no copy, for a float32 model on one device
            self._w32 = (
                head.weight.to(self.device, torch.float32),
                None if bias is None else bias.to(self.device, torch.float32),
            )
        w, b = self._w32
        # fp32 even for bf16 models
        logits = torch.nn.functional.linear(hidden.to(self.device).float(), w, b)  # (N, V)
        # in place: no second (N, V) tensor, so a chunk costs what the engine budgets for it
        scale = getattr(self.model.config, "logit_scale", None)
        if scale:
            logits.mul_(scale)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits.div_(cap).tanh_().mul_(cap)
        return logits

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def describe(self) -> dict:
        return {
            "path": self.name,
            "fingerprint": self.fingerprint,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "architecture": type(self.model).__name__,
            "n_params": self.n_params,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "max_length": self.max_length,
            "max_length_source": self.max_length_source,
            "vocab_size": self.vocab_size,
            "chunked_projection": self.chunked,
            "bos": self.bos.describe(),
            **self._placement_and_adapter(),
        }

    def _placement_and_adapter(self) -> dict:
        out: dict[str, Any] = {}
        if self.device_map is not None:
            out["device_map"] = self.device_map
        if self.adapter is not None:
            out["base_fingerprint"] = self.base_fingerprint
            out["adapter"] = {
                "path": str(self.adapter),
                "fingerprint": self.adapter_fingerprint,
                "merged_on_load": True,
            }
        return out

    def _projection_matches_forward(self) -> bool:
        """Check once, on a few tokens, that base_model + output projection equals the full forward.

        Architectures that post-process logits in ways we do not know fall back to full
        logits (correct, but memory then scales with batch x length x vocab).
        """
        if self.model.get_output_embeddings().weight.device.type == "meta":
            return False  # the head is offloaded: only the model's own forward brings it in
        ids = torch.arange(min(8, self.vocab_size), device=self.device).unsqueeze(0)  # (1, 8)
        mask = torch.ones_like(ids)
        try:
            with torch.no_grad():
                h = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
                ours = self.project(h[0])
        except (AttributeError, TypeError):
            return False
        ref = self.logits(ids, mask)[0].float()
        tol = 1e-4 if self.dtype == torch.float32 else 5e-2
        return bool(
            torch.allclose(ours, ref, atol=tol * max(1.0, ref.abs().max().item()), rtol=tol)
        )


def _input_device(model: Any) -> torch.device:
    """Where inputs go: the input embedding's device. With a device map that is where the
    first layer runs; an offloaded embedding runs on the first GPU of the map.
    """
    weight = model.get_input_embeddings().weight
    if weight.device.type != "meta":
        return weight.device
    placed = [d for d in (_placement(model) or {}).values() if d not in ("cpu", "disk")]
    if not placed:
        return torch.device("cpu")
    return torch.device(int(placed[0]) if placed[0].isdigit() else placed[0])


def _placement(model: Any) -> dict[str, str] | None:
    """accelerate's map of module -> device, when a device map placed the model over devices."""
    placement = getattr(model, "hf_device_map", None)
    return {k: str(v) for k, v in placement.items()} if placement else None


def _outputs_on_input_device(model: Any) -> None:
    """Make the base model return its hidden states on the device its inputs came from.

    memaudit calls ``model.base_model`` directly (the chunked projection) and indexes its output
    with tensors on the input device; accelerate aligns only the top module's outputs.
    """
    if len(set((_placement(model) or {}).values())) < 2:
        return
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    # the KV cache stays where each layer keeps it, as accelerate's own hooks leave it
    own = getattr(model, "_skip_keys_device_placement", None) or []
    own = [own] if isinstance(own, str) else list(own)
    skip = list(dict.fromkeys([*own, "past_key_values", "cache"]))  # renamed in transformers 5.2x
    hook = AlignDevicesHook(
        execution_device=_input_device(model), io_same_device=True, skip_keys=skip
    )
    add_hook_to_module(model.base_model, hook, append=True)


CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")
ASSUMED_CONTEXT = 2048


def _context_length(config: Any, model_dir: Path) -> tuple[int, str]:
    """The context length in tokens and the config key it came from.

    A config that names none (some state-space models have no fixed context) gets
    ``ASSUMED_CONTEXT``, with a warning and ``"assumed"`` as its source in ``describe()``.
    """
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value, key
    warnings.warn(
        f"{model_dir}/config.json names no context length ({', '.join(CONTEXT_KEYS)}); "
        f"assuming {ASSUMED_CONTEXT} tokens (scoring windows and generation stay within it)",
        MemauditWarning,
        stacklevel=3,
    )
    return ASSUMED_CONTEXT, "assumed"


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the config and the full bytes of every safetensors file."""
    h = hashlib.sha256()
    h.update(json.dumps(_read_json(model_dir / "config.json"), sort_keys=True).encode())
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()[:16]


def adapter_fingerprint(adapter_dir: Path) -> str:
    """sha256 over a PEFT adapter's config and the bytes of its safetensors weights."""
    from .peft_adapters import WEIGHTS, read_adapter_config

    h = hashlib.sha256()
    h.update(json.dumps(read_adapter_config(adapter_dir), sort_keys=True).encode())
    h.update(file_digest(adapter_dir / WEIGHTS).encode())
    return h.hexdigest()[:16]


def _check_adapter_tokenizer(adapter_dir: Path, base_tokenizer: Any) -> None:
    """An adapter dir may carry a tokenizer (trainers save one); memaudit scores with the base's,
    so a vocabulary other than the base's is refused rather than silently ignored.
    """
    if not any((adapter_dir / name).is_file() for name in TOKENIZER_FILES):
        return
    if load_tokenizer(adapter_dir).get_vocab() != base_tokenizer.get_vocab():
        raise ModelLoadError(
            f"{adapter_dir}: carries a tokenizer whose vocabulary differs from the base's; "
            "an adapter trained with added tokens needs its base resized first"
        )


def tokenizer_fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = model_dir / name
        if f.is_file():
            h.update(name.encode())
            h.update(file_digest(f).encode())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from e


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
