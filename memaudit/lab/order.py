"""The effect of training order without retraining (after FUT, Yang et al. 2025, "Estimating the
Effects of Sample Training Orders for Large Language Models without Retraining").

One reference run of :func:`memaudit.lab.lm.fit` is recorded; for every alternative order
declared before it (rows of some steps replaced, e.g. a sample swapped to another step) the
recorder follows, step by step, the difference ``delta_t = gamma_t - theta_t`` between the
parameters the alternative order would have and the reference's:

- the alternative batch's gradient is taken at the reference parameters ``theta_t``
  (``taylor=1``: the update's Taylor expansion to first order in the learning rate), or at
  ``theta_t`` plus a Hessian-vector product with ``delta_t`` (``taylor=2``: the gradient's own
  first-order expansion in ``delta_t``, which makes the parameter error third order in the
  learning rate);
- that gradient is clipped as ``fit`` clips (global norm 1.0) and pushed through AdamW with the
  reference run's live moments: the alternative's first and second moments are the
  reference's plus tracked differences, so bias correction, the square root and weight decay
  are applied exactly, not linearised.

The estimated final parameters are ``theta_T + delta_T``. What a loss estimate needs after the
run is stored through a seeded Gaussian random projection (``RandomProjection``: k floats per
order and per target instead of d), which preserves inner products in expectation
(Johnson-Lindenstrauss); the full ``delta_T`` is kept as well, so a loss can also be evaluated at
the estimated parameters.

Memory while recording: three parameter-sized vectors per alternative order (moment
differences and ``delta``), so this is for lab-sized models (docs/order.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from memaudit.errors import InputError

from .lm import TrainSettings, fit, make_optimizer

CLIP_NORM = 1.0  # fit's clip_grad_norm_ threshold


@dataclass(frozen=True)
class RowChange:
    """At ``step``, the batch rows ``rows`` hold ``tokens`` ((len(rows), T) ids) instead."""

    step: int
    rows: tuple[int, ...]
    tokens: torch.Tensor


@dataclass(frozen=True)
class Order:
    """An alternative training order: the reference's batches with some rows changed."""

    name: str
    changes: tuple[RowChange, ...]

    def batch_at(self, base: Callable[[int], torch.Tensor]) -> Callable[[int], torch.Tensor]:
        """The alternative order's batches, for retraining it (and for the recorder)."""
        by_step: dict[int, list[RowChange]] = {}
        for c in self.changes:
            by_step.setdefault(c.step, []).append(c)

        def batch(step: int) -> torch.Tensor:
            b = base(step)  # (B, T)
            if step not in by_step:
                return b
            b = b.clone()
            for c in by_step[step]:
                b[list(c.rows)] = c.tokens.to(b.dtype)
            return b

        return batch

    @property
    def first_step(self) -> int:
        return min(c.step for c in self.changes)


def swap_rows(base, *, name: str, rows: Sequence[int], step_a: int, step_b: int) -> Order:
    """The order with rows ``rows`` of steps ``step_a`` and ``step_b`` exchanged: the same
    sequences are trained on, only when changes.
    """
    if step_a == step_b:
        raise InputError(f"order {name}: a swap needs two different steps, got {step_a} twice")
    rows = tuple(int(r) for r in rows)
    a, b = base(step_a)[list(rows)], base(step_b)[list(rows)]  # (R, T) each
    return Order(name, (RowChange(step_a, rows, b), RowChange(step_b, rows, a)))


class RandomProjection:
    """A seeded Gaussian projection R^d -> R^k with entries N(0, 1/k), so that
    ``E <P x, P y> = <x, y>`` with a standard deviation of at most ``sqrt(2/k) |x| |y|``.

    The matrix is never stored: it is regenerated chunk by chunk of columns from the seed, so
    projecting costs k x d multiply-adds and k x ``chunk`` floats of memory.
    """

    def __init__(self, dim: int, k: int, *, seed: int = 0, chunk: int = 1 << 15):
        if dim < 1 or k < 1:
            raise InputError(f"a projection needs dim >= 1 and k >= 1, got {dim} and {k}")
        self.dim, self.k, self.seed, self.chunk = dim, k, seed, chunk

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (d,) or (n, d); returns (k,) or (n, k), float64."""
        if x.shape[-1] != self.dim:
            raise InputError(f"projection of dimension {self.dim} given a vector of {x.shape[-1]}")
        rows = x.detach().reshape(-1, self.dim).to("cpu", torch.float64)  # (n, d)
        out = torch.zeros(rows.shape[0], self.k, dtype=torch.float64)  # (n, k)
        for i, lo in enumerate(range(0, self.dim, self.chunk)):
            hi = min(lo + self.chunk, self.dim)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            g = torch.randn(self.k, hi - lo, generator=gen, dtype=torch.float64)  # (k, c)
            out += rows[:, lo:hi] @ g.T
        out /= math.sqrt(self.k)
        return out.reshape(*x.shape[:-1], self.k)


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _split(vec: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for p in like:
        out.append(vec[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


def _clipped(g: torch.Tensor) -> torch.Tensor:
    # clip_grad_norm_'s rule: scale by max_norm / (norm + 1e-6) when that is below 1
    coef = CLIP_NORM / (torch.linalg.vector_norm(g) + 1e-6)
    return g * torch.clamp(coef, max=1.0)


class _Track:
    """One alternative order's differences from the reference: moments and parameters."""

    def __init__(self, order: Order, taylor: int, d: int, like: torch.Tensor):
        self.order, self.taylor = order, taylor
        self.changes = {c.step: c for c in order.changes}
        if len(self.changes) != len(order.changes):
            by_step: dict[int, list[RowChange]] = {}
            for c in order.changes:
                by_step.setdefault(c.step, []).append(c)
            self.changes = {  # several changes at one step: one combined change
                s: RowChange(
                    s, tuple(r for c in cs for r in c.rows), torch.cat([c.tokens for c in cs])
                )
                for s, cs in by_step.items()
            }
        self.dm = torch.zeros(d, dtype=like.dtype, device=like.device)
        self.dv = torch.zeros_like(self.dm)
        self.delta = torch.zeros_like(self.dm)
        self.active = False


def _batch_loss(model, batch: torch.Tensor) -> torch.Tensor:
    return model(input_ids=batch, labels=batch).loss  # as fit computes it


class OrderRecorder:
    """Follows alternative orders along one reference run (see the module docstring).

    Use :func:`record` rather than this class directly.
    """

    def __init__(
        self,
        model,
        batch_at: Callable[[int], torch.Tensor],
        orders: Sequence[Order],
        *,
        taylor: Sequence[int] = (1, 2),
    ):
        if any(t not in (1, 2) for t in taylor) or not taylor:
            raise InputError(f"taylor orders must be 1 and/or 2, got {list(taylor)}")
        self.model, self.batch_at = model, batch_at
        self.params = [p for p in model.parameters() if p.requires_grad]
        d = sum(p.numel() for p in self.params)
        like = self.params[0].detach()
        self.tracks = [_Track(o, t, d, like) for o in orders for t in taylor]
        self.step = 0

    def before_update(self, optimizer: torch.optim.Optimizer) -> None:
        """Called with the reference's clipped gradients in ``.grad``, before AdamW updates."""
        s = self.step
        self.step += 1
        for t in self.tracks:
            t.active = t.active or s in t.changes
        live = [t for t in self.tracks if t.active]
        if not live:
            return
        group = optimizer.param_groups[0]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        g_ref = flat([p.grad for p in self.params]).detach()  # (d,) clipped, as trained
        m_prev, v_prev = self._moments(optimizer, g_ref)
        m = beta1 * m_prev + (1 - beta1) * g_ref
        v = beta2 * v_prev + (1 - beta2) * g_ref * g_ref
        n = s + 1  # AdamW's step count after this update
        bc1, bc2 = 1 - beta1**n, 1 - beta2**n
        u_ref = (m / bc1) / (v.sqrt() / math.sqrt(bc2) + eps)
        grads = self._alternative_gradients(live, s, g_ref)
        for t, g in zip(live, grads, strict=True):
            t.dm = beta1 * t.dm + (1 - beta1) * (g - g_ref)
            t.dv = beta2 * t.dv + (1 - beta2) * (g * g - g_ref * g_ref)
            v_alt = torch.clamp(v + t.dv, min=0.0)
            u_alt = ((m + t.dm) / bc1) / (v_alt.sqrt() / math.sqrt(bc2) + eps)
            t.delta = t.delta * (1 - lr * wd) - lr * (u_alt - u_ref)

    def _moments(self, optimizer, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = [optimizer.state.get(p, {}) for p in self.params]
        if not all("exp_avg" in st for st in states):
            return torch.zeros_like(like), torch.zeros_like(like)  # the first step
        return (
            flat([st["exp_avg"] for st in states]).detach(),
            flat([st["exp_avg_sq"] for st in states]).detach(),
        )

    def _alternative_gradients(self, live, s: int, g_ref: torch.Tensor) -> list[torch.Tensor]:
        """Each live order's clipped gradient at step ``s``, at the taylor order it asks for."""
        out: list[torch.Tensor | None] = [None] * len(live)
        # grouped by the batch they need, so each batch's graph is built once
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(live):
            change = t.changes.get(s)
            if change is None and t.taylor == 1:
                out[i] = g_ref  # same batch at the same parameters: the reference's gradient
                continue
            groups.setdefault("ref" if change is None else f"{id(t)}", []).append(i)
        base = None
        for key, idx in groups.items():
            if key == "ref":
                if base is None:
                    base = self.batch_at(s)
                batch = base
            else:
                if base is None:
                    base = self.batch_at(s)
                change = live[idx[0]].changes[s]
                batch = base.clone()
                batch[list(change.rows)] = change.tokens.to(batch.dtype)
            for i, g in zip(idx, self._gradients(batch, [live[i] for i in idx]), strict=True):
                out[i] = g
        return [g if g is not None else g_ref for g in out]

    def _gradients(self, batch: torch.Tensor, tracks: list[_Track]) -> list[torch.Tensor]:
        device = self.params[0].device
        second = any(t.taylor == 2 for t in tracks)
        with torch.enable_grad():
            loss = _batch_loss(self.model, batch.to(device))
            grads = torch.autograd.grad(loss, self.params, create_graph=second)
            g = flat(grads).detach()  # (d,) unclipped
            out = []
            for t in tracks:
                if t.taylor == 1:
                    out.append(_clipped(g))
                    continue
                hv = torch.autograd.grad(
                    grads, self.params, grad_outputs=_split(t.delta, self.params), retain_graph=True
                )
                out.append(_clipped(g + flat(hv).detach()))
        return out


class _RecordingAdamW(torch.optim.AdamW):
    """fit's AdamW, with the recorder called before each update (outside AdamW's no-grad)."""

    def __init__(self, params, recorder: OrderRecorder, **kw):
        super().__init__(params, **kw)
        self.recorder = recorder

    def step(self, closure=None):
        self.recorder.before_update(self)
        return super().step(closure)


@dataclass
class Recording:
    """What one recorded run gives: the reference's losses and each (order, taylor)'s final
    parameter difference ``delta_T`` (full, (d,)).
    """

    losses: list[float]
    deltas: dict[tuple[str, int], torch.Tensor]


def check_recordable(model) -> None:
    """The recorder replays batches outside fit's seeded step: dropout would differ."""
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Dropout) and mod.p > 0:
            raise InputError(
                f"the order estimate needs a model without dropout ({name}: p={mod.p})"
            )


def record(
    model,
    batch_at: Callable[[int], torch.Tensor],
    settings: TrainSettings,
    orders: Sequence[Order],
    *,
    taylor: Sequence[int] = (1, 2),
    on_step: Callable[[int, float], None] | None = None,
) -> Recording:
    """Train ``model`` with ``fit`` on the reference order ``batch_at`` and estimate, for every
    order in ``orders``, how its final parameters would differ.

    Returns
    -------
    Recording
        ``deltas[(order.name, k)]``: estimated ``gamma_T - theta_T`` at taylor order ``k``.
    """
    check_recordable(model)
    for o in orders:
        if not o.changes or any(not 0 <= c.step < settings.steps for c in o.changes):
            raise InputError(
                f"order {o.name}: its changes must fall in steps 0..{settings.steps - 1}"
            )
    if 2 in taylor:
        use_eager_attention(model)
    recorder = OrderRecorder(model, batch_at, orders, taylor=taylor)
    # fit's optimizer (make_optimizer), with the recorder before each update
    optimizer = _RecordingAdamW(
        model.parameters(), recorder, lr=settings.lr, weight_decay=settings.weight_decay
    )
    if type(make_optimizer(torch.nn.Linear(1, 1), settings)) is not torch.optim.AdamW:
        raise RuntimeError("fit's optimizer is no longer AdamW: the order recorder must follow it")
    losses = fit(model, batch_at, settings, optimizer=optimizer, on_step=on_step)
    return Recording(losses, {(t.order.name, t.taylor): t.delta for t in recorder.tracks})


def use_eager_attention(model) -> None:
    """Hessian-vector products need attention's double backward, which the fused (SDPA) CPU
    kernel lacks; eager attention computes the same function. Call it on the retrained models
    too, so reference and retraining run the same kernels.
    """
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")


def parameter_vector(model) -> torch.Tensor:
    return flat([p.detach() for p in model.parameters() if p.requires_grad])
