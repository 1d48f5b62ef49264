"""Batched greedy decoding with a KV cache.

Prompts are sorted by length, left-padded into batches, and decoded together: one forward
pass over the prompts, then one single-token pass per new token that reuses the cached
keys and values. Position ids follow each row's own tokens, so padding changes nothing.

The next token is chosen from float32 logits made by the adapter's own projection (the
one the scoring engine uses for ``is_argmax``), not from the model's bf16 logits: on a
bf16 model the two argmaxes would otherwise disagree where bf16 rounding ties the top
logits, and extraction and extraction strength would measure different things.

``sample_each`` draws several seeded samples per prompt in the same batches (SaMIA).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from memaudit.errors import InputError
from memaudit.io.progress import Progress

if TYPE_CHECKING:
    from .hf import HFCausalLM


@torch.no_grad()
def greedy_generate(
    model: HFCausalLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
    stage: str = "generating",
) -> list[list[int]]:
    """Greedy continuations of ``max_new_tokens`` tokens for every prompt (end-of-text does not stop
    them).

    Parameters
    ----------
    model : HFCausalLM
        An adapter holding a transformers causal LM (``model.model``).
    prompts : sequence of token-id sequences
        Each at least one token long.
    max_new_tokens : int
    batch_size : int, keyword-only
    progress : Progress, optional
        Told ``(stage, prompts done, prompts in total)`` after every batch.
    stage : str, keyword-only

    Returns
    -------
    list of list of int
        The generated ids, in the order of ``prompts``.
    """
    _check_prompts(model, prompts, max_new_tokens)
    out: list[list[int]] = [[] for _ in prompts]
    done = 0
    for chunk in generation_batches(prompts, batch_size):
        generated = _generate_batch(model, [prompts[i] for i in chunk], max_new_tokens)
        for i, g in zip(chunk, generated):
            out[i] = g
        done += len(chunk)
        if progress is not None:
            progress(stage, done, len(prompts))
    return out


def generation_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """The prompt indices of each batch :func:`greedy_generate` decodes: sorted by length (a
    stable sort), cut every ``batch_size``. The Ray engine deals out these same batches.

    Examples
    --------
    >>> generation_batches([[1, 2, 3], [4], [5, 6]], 2)
    [[1, 2], [0]]
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


@torch.no_grad()
def sample(
    model: HFCausalLM,
    prompt: Sequence[int],
    n: int,
    length: int,
    *,
    temperature: float,
    seed: int,
    batch_size: int = 64,
) -> list[list[int]]:
    """``n`` sampled continuations of ``length`` tokens of one prompt, at a temperature, seeded."""
    if temperature <= 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    gen = torch.Generator(device=model.device).manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        out.extend(
            _generate_batch(model, [prompt] * rows, length, temperature=temperature, generator=gen)
        )
    return out


@torch.no_grad()
def sample_each(
    model: HFCausalLM,
    prompts: Sequence[Sequence[int]],
    n: int,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    progress: Progress | None = None,
    stage: str = "sampling",
) -> list[list[list[int]]]:
    """``n`` sampled continuations of ``max_new_tokens`` tokens of every prompt, batched, seeded.

    The ``n`` rows of a prompt share a batch; prompts are sorted by length and packed
    ``batch_size // n`` (at least one) to a batch. Each prompt draws from its own generator,
    seeded by ``seed`` and the prompt's tokens, so a prompt's samples do not depend on which
    other prompts are in the call or in its batch (up to float rounding of a batched forward).

    Parameters
    ----------
    model : HFCausalLM
    prompts : sequence of token-id sequences
        Each at least one token long.
    n : int
        Samples per prompt.
    max_new_tokens : int
    temperature : float, keyword-only
        > 0; the logits are divided by it.
    top_k : int, keyword-only
        Sample among the ``top_k`` most likely tokens only; 0: the whole vocabulary.
    seed : int, keyword-only
    batch_size : int, keyword-only
        Rows per forward batch.

    Returns
    -------
    list of list of list of int
        ``out[i][j]``: the ``j``-th sample of prompt ``i``, in the order of ``prompts``.
    """
    if n < 1 or temperature <= 0 or top_k < 0:
        raise InputError(
            f"need n >= 1, temperature > 0, top_k >= 0; got {n}, {temperature:g}, {top_k}"
        )
    _check_prompts(model, prompts, max_new_tokens)
    per_batch = max(1, batch_size // n)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[list[int]]] = [[] for _ in prompts]
    for start in range(0, len(order), per_batch):
        chunk = order[start : start + per_batch]
        gens = [_prompt_generator(model, prompts[i], seed) for i in chunk]

        # (B, V) logits -> (B,) tokens, each prompt's rows from its own generator
        def pick(logits: torch.Tensor, gens: list[torch.Generator] = gens) -> torch.Tensor:
            if top_k:
                kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
            rows = [
                torch.multinomial(probs[j * n : (j + 1) * n], 1, generator=g)
                for j, g in enumerate(gens)
            ]
            return torch.cat(rows).squeeze(1)

        rows = [list(prompts[i]) for i in chunk for _ in range(n)]
        generated = _generate_batch(model, rows, max_new_tokens, pick=pick)
        for j, i in enumerate(chunk):
            out[i] = generated[j * n : (j + 1) * n]
        if progress is not None:
            progress(stage, min(start + per_batch, len(order)), len(order))
    return out


def _prompt_generator(model: HFCausalLM, prompt: Sequence[int], seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prompt))}".encode()).digest()
    return torch.Generator(device=model.device).manual_seed(int.from_bytes(digest[:7], "big"))


def _check_prompts(
    model: HFCausalLM, prompts: Sequence[Sequence[int]], max_new_tokens: int
) -> None:
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if any(len(p) < 1 for p in prompts):
        raise InputError("every prompt needs at least one token")
    longest = max((len(p) for p in prompts), default=0)
    if longest + max_new_tokens > model.max_length:
        raise InputError(
            f"a prompt of {longest} tokens plus {max_new_tokens} new tokens exceeds the model's "
            f"context of {model.max_length}"
        )


def _next_token(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _last_logits(model: HFCausalLM, out: Any) -> torch.Tensor:
    """(B, V) float32 logits of each row's last position, as the scoring engine computes them."""
    if model.chunked:
        return model.project(out.last_hidden_state[:, -1])  # (B, V)
    return out.logits[:, -1].float()


def _generate_batch(
    model: HFCausalLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[list[int]]:
    choose = pick or (lambda logits: _next_token(logits, temperature, generator))
    lm, device = model.model, model.device
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)  # (B, P), left-padded
    mask = torch.zeros(len(prompts), width, dtype=torch.long)  # (B, P)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(list(p))
        mask[r, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # (B, P): each row counts its own tokens
    # a plain projection: run the base model and project its last hidden state in float32
    lm = lm.base_model if model.chunked else lm
    cache = _cache_name(lm)
    recurrent = _is_recurrent(lm)
    # a recurrent model's prompt pass zeroes the left pads' states (its mask); no positions
    out = lm(
        input_ids=ids,
        attention_mask=mask,
        use_cache=True,
        **({} if recurrent else {"position_ids": positions}),
    )
    token = choose(_last_logits(model, out))  # (B,)
    tokens = [token]
    for _ in range(max_new_tokens - 1):
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        positions = positions[:, -1:] + 1  # (B, 1)
        # Recurrent models take neither: their state carries the position, and a (B, P + n)
        # mask would be broadcast over the one new token (Mamba's mixer multiplies by it),
        # silently corrupting the convolution state from the second new token on.
        step = {} if recurrent else {"attention_mask": mask, "position_ids": positions}
        out = lm(input_ids=token[:, None], use_cache=True, **{cache: getattr(out, cache)}, **step)
        token = choose(_last_logits(model, out))
        tokens.append(token)
    return torch.stack(tokens, dim=1).tolist()  # (B, M)


def _is_recurrent(lm: torch.nn.Module) -> bool:
    """A state-space model (Mamba, Mamba2): its forward takes no position ids. transformers'
    own ``generate`` gives its one-token passes no attention mask either.
    """
    return "position_ids" not in inspect.signature(lm.forward).parameters


def _cache_name(lm: torch.nn.Module) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); take whichever this version
    has.
    """
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
