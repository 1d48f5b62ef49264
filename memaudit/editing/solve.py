"""The closed-form updates of the preservation-memorization objective.

One linear map ``W`` (d_out, d_in) of an MLP writes values ``v = W k`` for keys ``k``. Editing
keeps what ``W`` does on the keys the model sees on ordinary text, summarised by their second
moment ``C = K0 K0^T`` (d_in, d_in), while making ``W`` write new values ``V_E`` (d_out, E) for
the edit keys ``K_E`` (d_in, E). The three methods differ in how the two wishes are weighed
(Gupta et al., "A Unified Framework for Model Editing"):

- ROME, one edit, equality constraint:
  ``W' = W + (v* - W k*) (C^-1 k*)^T / (k*^T C^-1 k*)``;
- MEMIT, a batch, least squares: minimise ``||D K0||^2 + ||(W + D) K_E - V_E||^2``, so
  ``D = (V_E - W K_E) K_E^T (C + K_E K_E^T)^-1`` (the weight of preservation is carried by ``C``'s
  scale: MEMIT's ``mom2_update_weight`` times the keys' mean second moment);
- EMMET, a batch, equality constraints: minimise ``||D K0||^2`` subject to ``(W + D) K_E = V_E``,
  so ``D = (V_E - W K_E) (K_E^T C^-1 K_E)^-1 K_E^T C^-1``, with a small ridge on
  ``K_E^T C^-1 K_E`` for batches whose keys are nearly dependent (EMMET's ``emmet_lambda``).

Everything is computed in float64 and returned in the dtype of ``W``.
"""

from __future__ import annotations

import torch

from memaudit.errors import InputError


def _check(W: torch.Tensor, C: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> None:
    d_out, d_in = W.shape
    if C.shape != (d_in, d_in):
        raise InputError(f"the key covariance is {tuple(C.shape)}, the layer takes {d_in} inputs")
    if K.ndim != 2 or K.shape[0] != d_in:
        raise InputError(f"edit keys are {tuple(K.shape)}, expected ({d_in}, E)")
    if V.shape != (d_out, K.shape[1]):
        raise InputError(f"edit values are {tuple(V.shape)}, expected ({d_out}, {K.shape[1]})")


def rome_delta(W: torch.Tensor, C: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ROME's rank-one update: afterwards ``(W + D) k = v`` exactly, and every key ``j`` with
    ``j^T C^-1 k = 0`` is mapped as before.

    Parameters
    ----------
    W : (d_out, d_in) tensor
    C : (d_in, d_in) tensor, the preserved keys' second moment (its scale cancels)
    k, v : (d_in,) and (d_out,) tensors, the edit's key and value

    Examples
    --------
    >>> W, C = torch.zeros(2, 3), torch.eye(3)
    >>> D = rome_delta(W, C, torch.tensor([1.0, 0, 0]), torch.tensor([2.0, 3.0]))
    >>> (W + D) @ torch.tensor([1.0, 0, 0])
    tensor([2., 3.])
    """
    _check(W, C, k[:, None], v[:, None])
    W64, k64, v64 = W.double(), k.double(), v.double()
    c_inv_k = torch.linalg.solve(C.double(), k64)  # (d_in,)
    D = torch.outer(v64 - W64 @ k64, c_inv_k) / (k64 @ c_inv_k)
    return D.to(W.dtype)


def memit_delta(W: torch.Tensor, C: torch.Tensor, K: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """MEMIT's least-squares update ``(V - W K) K^T (C + K K^T)^-1`` for E edits at once.

    Parameters
    ----------
    W : (d_out, d_in) tensor
    C : (d_in, d_in) tensor, the preserved keys' second moment, already scaled by the weight
        of preservation
    K, V : (d_in, E) and (d_out, E) tensors
    """
    _check(W, C, K, V)
    K64 = K.double()
    R = V.double() - W.double() @ K64  # (d_out, E)
    A = C.double() + K64 @ K64.T  # (d_in, d_in), symmetric
    return torch.linalg.solve(A, K64 @ R.T).T.to(W.dtype)


def emmet_delta(
    W: torch.Tensor, C: torch.Tensor, K: torch.Tensor, V: torch.Tensor, *, ridge: float = 0.0
) -> torch.Tensor:
    """EMMET's equality-constrained batch update ``(V - W K) (K^T C^-1 K + ridge I)^-1 K^T C^-1``.

    With ``ridge = 0`` and independent keys, ``(W + D) K = V`` holds exactly and ``D`` changes the
    preserved keys' outputs least (in ``C``'s norm); EMMET adds the ridge for E > 1 only.

    Parameters
    ----------
    W : (d_out, d_in) tensor
    C : (d_in, d_in) tensor
    K, V : (d_in, E) and (d_out, E) tensors
    ridge : float, >= 0
    """
    _check(W, C, K, V)
    if ridge < 0:
        raise InputError(f"the EMMET ridge must be >= 0, got {ridge}")
    K64 = K.double()
    R = V.double() - W.double() @ K64  # (d_out, E)
    c_inv_K = torch.linalg.solve(C.double(), K64)  # (d_in, E)
    D_mat = K64.T @ c_inv_K  # (E, E)
    if K.shape[1] > 1 and ridge:
        D_mat = D_mat + ridge * torch.eye(D_mat.shape[0], dtype=D_mat.dtype)
    return (R @ torch.linalg.solve(D_mat, c_inv_K.T)).to(W.dtype)
