"""What an attack is, and the registry that holds them.

An attack is a small pure function ``fn(inputs, **params) -> (N,) array`` over scores that
the engine already computed. The one sign convention, written once: **higher score = more
likely a member**. An attack that needs another scored view of the texts (lowercased, or
under a reference model) names it in ``needs``; the runner scores each view once for all
attacks that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from memaudit.errors import InputError
from memaudit.registry import Registry
from memaudit.scoring.tokenscores import TokenScores

VIEWS = ("lowercase", "reference")


@dataclass(frozen=True)
class AttackInputs:
    """Everything an attack may read: the texts and their scored views."""

    texts: list[str]
    target: TokenScores  # the target model on the texts
    lowercase: TokenScores | None = None  # the target model on the lowercased texts
    reference: TokenScores | None = None  # the reference model on the texts

    def view(self, name: str) -> TokenScores:
        """The scored view ``name``; reading one not declared in ``needs`` fails here."""
        scores = getattr(self, name)
        if scores is None:
            raise ValueError(f"the '{name}' view was not scored (declare it in the attack's needs)")
        return scores


@dataclass(frozen=True)
class Attack:
    name: str
    fn: Callable[..., np.ndarray]
    description: str
    needs: frozenset[str] = frozenset()
    defaults: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    """An attack with resolved parameters; ``column`` names its score column."""

    attack: Attack
    params: dict[str, float]

    @property
    def column(self) -> str:
        changed = {k: v for k, v in self.params.items() if v != self.attack.defaults[k]}
        return self.attack.name + "".join(f":{k}={v:g}" for k, v in changed.items())

    def __call__(self, inputs: AttackInputs) -> np.ndarray:
        for view in self.attack.needs:
            if getattr(inputs, view) is None:
                raise InputError(f"attack '{self.attack.name}' needs the {view} view")
        return np.asarray(self.attack.fn(inputs, **self.params), dtype=np.float64)


ATTACKS: Registry[Attack] = Registry("attack")


AttackFn = Callable[..., np.ndarray]  # (AttackInputs, **params) -> one score per text


def register(
    name: str, *, description: str, needs: tuple[str, ...] = (), **defaults: float
) -> Callable[[AttackFn], AttackFn]:
    """Register an attack function under ``name``; keyword defaults become its settable params."""
    unknown = set(needs) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {unknown}")

    def deco(fn: AttackFn) -> AttackFn:
        ATTACKS.add(name, Attack(name, fn, description, frozenset(needs), dict(defaults)))
        return fn

    return deco


def parse_attacks(spec: str) -> list[AttackSpec]:
    """Parse ``"all"`` or a comma list like ``"loss,min_k:k=0.1,min_k_pp"``.

    Raises
    ------
    UnknownNameError
        An unknown attack, with a "did you mean".
    InputError
        An unknown or malformed parameter.
    """
    if spec.strip() == "all":
        return [AttackSpec(a, dict(a.defaults)) for a in ATTACKS]
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, *assignments = item.split(":")
        attack = ATTACKS.get(name)
        params = dict(attack.defaults)
        for a in assignments:
            key, sep, value = a.partition("=")
            if not sep or key not in params:
                known = ", ".join(params) or "none"
                raise InputError(f"attack '{name}': bad parameter '{a}' (settable: {known})")
            try:
                params[key] = float(value)
            except ValueError:
                raise InputError(
                    f"attack '{name}': '{key}' must be a number, got '{value}'"
                ) from None
        _check_params(name, params)
        out.append(AttackSpec(attack, params))
    if not out:
        raise InputError("no attack named")
    columns = [s.column for s in out]
    if len(set(columns)) != len(columns):
        raise InputError(f"an attack is named twice: {', '.join(columns)}")
    return out


def _check_params(name: str, params: dict[str, float]) -> None:
    k = params.get("k")
    if k is not None and not 0 < k <= 1:
        raise InputError(f"attack '{name}': k must be in (0, 1], got {k:g}")


def per_text(scores: TokenScores, field_name: str) -> list[np.ndarray]:
    """The scored values of one per-token field, one array per text."""
    return [getattr(t, field_name) for t in scores]


def mean_logp(scores: TokenScores) -> np.ndarray:
    """Mean log-probability of the scored tokens of each text (minus the mean NLL)."""
    values = np.where(scores.scored, scores.logp, 0.0).astype(np.float64)
    # per-text sums by text index: reduceat would fail on a trailing empty text and give a
    # neighbour's value for an empty one in the middle
    text_of = np.repeat(np.arange(len(scores)), scores.n_tokens)
    sums = np.bincount(text_of, weights=values, minlength=len(scores))
    n = scores.n_scored
    return np.where(n > 0, sums / np.maximum(n, 1), np.nan)


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the lowest ``max(1, floor(k * n))`` values."""
    n_keep = max(1, int(k * len(values) + 1e-9))  # the epsilon keeps 0.3 * 10 at 3
    return float(np.mean(np.partition(values, n_keep - 1)[:n_keep], dtype=np.float64))
