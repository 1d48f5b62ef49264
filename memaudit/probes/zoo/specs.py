"""The zoo's names and sizes, without torch: ``ZooConfig`` and the ``MIXERS`` registry.

Each ``MixerSpec`` says what its ``state`` knob means (feature dim, window, segment length, ...),
its default at a given width, which values it can take, and where its module lives (imported
only by ``build``), so ``--arch``/``--state`` are checked before torch loads.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memaudit.errors import InputError, UnknownNameError
from memaudit.registry import Registry

DEFAULT_WINDOW = 64  # BASED's sliding window; also Titans' short attention window


@dataclass(frozen=True)
class ZooConfig:
    """A zoo language model: one mixer kind in ``n_layers`` shared blocks.

    Parameters
    ----------
    arch : str
        A name of ``MIXERS``.
    vocab, d_model, n_layers, n_heads, max_len : int
        Vocabulary, width, depth, heads (``d_model`` must divide by it), longest input.
    state : int, optional
        The arch's own size knob (``MIXERS.get(arch).knob`` says which); None = its default.
    window : int, optional
        The short sliding window of ``based`` and ``titans`` (None = 64, BASED's).
    short_conv : int
        Kernel of the causal depthwise convolution before every mixer (0: none). Without it
        every recurrent mixer stayed on the MQAR plateau; BASED, H3, Mamba and DeltaNet all
        have one.
    """

    arch: str
    vocab: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 1
    max_len: int = 256
    state: int | None = None
    window: int | None = None
    short_conv: int = 4

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def spec(self) -> MixerSpec:
        return MIXERS.get(self.arch)

    @property
    def state_size(self) -> int:
        """The knob's value: ``state``, else the arch's default at this width."""
        return self.state if self.state is not None else self.spec.default_state(self)

    @property
    def window_size(self) -> int:
        return self.window if self.window is not None else DEFAULT_WINDOW

    def check(self) -> ZooConfig:
        """Raise a one-line ``InputError`` for an unknown arch or a size it cannot have."""
        try:
            spec = MIXERS.get(self.arch)
        except UnknownNameError as e:
            raise InputError(f"--arch: {e}") from None
        for name in ("vocab", "d_model", "n_layers", "n_heads", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.vocab < 2:
            raise InputError(f"vocab must be at least 2, got {self.vocab}")
        if self.d_model % self.n_heads:
            raise InputError(f"d_model {self.d_model} does not divide into {self.n_heads} heads")
        for name in ("state", "window"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InputError(f"{name} must be an integer or None, got {value!r}")
        if isinstance(self.short_conv, bool) or not isinstance(self.short_conv, int):
            raise InputError(f"short_conv must be an integer, got {self.short_conv!r}")
        if self.short_conv < 0:
            raise InputError(f"short_conv must be >= 0 (0: none), got {self.short_conv}")
        if self.window is not None and self.window < 1:
            raise InputError(f"window must be at least 1, got {self.window}")
        problem = spec.check_state(self, self.state_size)
        if problem:
            raise InputError(f"--state {self.state_size} for {self.arch} ({spec.knob}): {problem}")
        return self


@dataclass(frozen=True)
class MixerSpec:
    """One registered mixer.

    ``module`` is ``"pkg.module:Class"``; the class takes a checked ``ZooConfig``.
    ``check_state(cfg, value)`` returns what is wrong with ``value``, or None.
    """

    name: str
    description: str
    knob: str
    module: str
    default_state: Callable[[ZooConfig], int]
    check_state: Callable[[ZooConfig, int], str | None]
    recurrent: bool = True  # has init_state / step

    def build(self, cfg: ZooConfig) -> Any:
        """The mixer module (torch imported here)."""
        path, cls = self.module.split(":")
        return getattr(importlib.import_module(path), cls)(cfg)


MIXERS: Registry[MixerSpec] = Registry("arch")


def _at_least_one(cfg: ZooConfig, value: int) -> str | None:
    return None if value >= 1 else "must be at least 1"


def _even_head(cfg: ZooConfig) -> str | None:
    return None if cfg.head_dim % 2 == 0 else f"RoPE needs an even head dim, not {cfg.head_dim}"


def _window(cfg: ZooConfig, value: int) -> str | None:
    return _at_least_one(cfg, value) or _even_head(cfg)


def _attention(cfg: ZooConfig, value: int) -> str | None:
    if cfg.state is not None:
        return "attention has no state knob (its KV cache grows with the sequence); leave it unset"
    return _even_head(cfg)


def _feature(cfg: ZooConfig, value: int) -> str | None:
    if value < 1:
        return "must be at least 1"
    if value > cfg.head_dim:
        return (
            f"the feature dim projects a head down, so it must be at most head_dim {cfg.head_dim}"
        )
    return None


def _with_window(check: Callable[[ZooConfig, int], str | None]):
    def both(cfg: ZooConfig, value: int) -> str | None:
        return check(cfg, value) or _even_head(cfg)

    return both


def _head(cfg: ZooConfig) -> int:
    return cfg.head_dim


def _add(name, description, knob, module, default, check, recurrent=True) -> None:
    MIXERS.add(
        name,
        MixerSpec(
            name, description, knob, f"memaudit.probes.zoo.{module}", default, check, recurrent
        ),
    )


_add(
    "attention",
    "softmax attention, causal, RoPE; state = the KV cache, 2*T*d_model per layer",
    "none (the KV cache grows with T)",
    "attention:Attention",
    lambda cfg: 0,
    _attention,
)
_add(
    "sliding_window",
    "softmax attention over the last `state` tokens, RoPE; state = 2*min(T, w)*d_model",
    "window w",
    "attention:SlidingWindow",
    lambda cfg: DEFAULT_WINDOW,
    _window,
)
_add(
    "linear_attention",
    "linear attention, elu+1 feature map, cumulative state S (f x d_v) and normaliser z per head",
    "feature dim f",
    "linear:LinearAttention",
    _head,
    _feature,
)
_add(
    "based",
    "BASED: 2nd-order Taylor linear attention on f dims + a short sliding window (default 64)",
    "feature dim f",
    "based:Based",
    lambda cfg: min(16, cfg.head_dim),
    _with_window(_feature),
)
_add(
    "gla",
    "gated linear attention: per-key-dim data-dependent decay of a d_k x d_v state per head",
    "key dim d_k",
    "gla:GLA",
    _head,
    _at_least_one,
)
_add(
    "deltanet",
    "DeltaNet: the delta rule, online regression of values on L2-normalised keys",
    "key dim d_k",
    "deltanet:DeltaNet",
    _head,
    _at_least_one,
)
_add(
    "titans",
    "Titans (memory-as-gate): an MLP memory trained per token with momentum and forgetting"
    " + a short sliding window",
    "memory hidden width h",
    "titans:Titans",
    _head,
    _with_window(_at_least_one),
)
_add(
    "memory_caching",
    "memory caching (GRM): linear attention whose state is cached every L tokens and read back"
    " through a softmax gate",
    "segment length L",
    "memory_caching:MemoryCaching",
    lambda cfg: 32,
    _at_least_one,
)
