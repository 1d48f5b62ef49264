"""What an attack is, and the registry that holds them.

An attack is a small pure function ``fn(inputs, **params) -> (N,) array`` over scores that
the engine already computed. The one sign convention, written once: **higher score = more
likely a member**. An attack that needs another view of the texts names it in ``needs``; the
runner computes each view once for all attacks that need it.

Two views are built in (``lowercase``: the target on the lowercased texts; ``reference``: a
reference model on the texts). Any other view is a :class:`View` registered with
:func:`register_view` in the attack's own module, beside the attacks that read it: it says
which settings it requires, checks its inputs in ``prepare`` (before any output is written)
and computes its value in ``compute``. Adding an attack touches its module and its test,
never the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from memaudit.errors import InputError
from memaudit.registry import Registry
from memaudit.scoring.tokenscores import TokenScores

BUILTIN_VIEWS = {"lowercase": (), "reference": ("reference",)}  # view -> settings it requires


class PerTextView(Protocol):
    """What a registered view computes: one entry per text, in the texts' order."""

    def subset(self, indices: Iterable[int]) -> PerTextView: ...


@dataclass(frozen=True)
class View:
    """A view of the texts that some attacks need beyond the target's own scores.

    Parameters
    ----------
    name : str
        What attacks name in ``needs``.
    description : str
        What it is, for ``memaudit attacks``.
    cost : str
        Its cost in forward passes per text, in words (e.g. "1 target pass (prefix cached)").
    requires : tuple of str
        Settings (``MiaConfig`` fields) that must be given; under ``--attacks all`` the attacks
        that need a view whose settings are missing are left out with a note. ``"a|b"``
        means either one (:func:`alternatives`).
    prepare : callable
        ``prepare(ctx) -> state``: read and check the view's inputs. Runs before any output is
        written, so a bad input leaves nothing behind.
    compute : callable
        ``compute(ctx, state) -> (value, stats)``: the view's value (a :class:`PerTextView`)
        and a ``{model: ScoreStats}`` dict of the work it did.
    """

    name: str
    description: str
    cost: str
    requires: tuple[str, ...]
    prepare: Callable[[Any], Any]
    compute: Callable[[Any, Any], tuple[Any, dict]]


VIEWS: Registry[View] = Registry("view")


def alternatives(requirement: str) -> tuple[str, ...]:
    """The settings of one requirement, any of which satisfies it.

    >>> alternatives("token_frequencies|index"), alternatives("reference")
    (('token_frequencies', 'index'), ('reference',))
    """
    return tuple(requirement.split("|"))


def describe_requirement(requirement: str, flag: Callable[[str], str]) -> str:
    """A requirement as its flags: ``--token-frequencies or --index``."""
    return " or ".join(flag(a) for a in alternatives(requirement))


def register_view(
    name: str,
    *,
    description: str,
    cost: str,
    requires: tuple[str, ...] = (),
    prepare: Callable[[Any], Any] | None = None,
) -> Callable[[Callable], Callable]:
    """Register ``compute(ctx, state) -> (value, stats)`` as the view ``name``.

    ``prepare(ctx) -> state`` reads and checks the view's inputs before any output is
    written (default: no state). In a module beside the attacks that read it::

        @register_view("lengths", description="text lengths", cost="no model pass")
        def lengths(ctx, state):
            return PerText(n=np.array([len(t) for t in ctx.texts])), {}
    """
    if name in BUILTIN_VIEWS:
        raise ValueError(f"'{name}' is a built-in view")

    def deco(compute: Callable) -> Callable:
        VIEWS.add(
            name,
            View(name, description, cost, tuple(requires), prepare or (lambda ctx: None), compute),
        )
        return compute

    return deco


@dataclass(frozen=True)
class PerText:
    """Per-text arrays of a view (first axis = text), e.g. ``PerText(gradnorm=...)``."""

    arrays: dict[str, np.ndarray]

    def __init__(self, **arrays: np.ndarray):
        object.__setattr__(self, "arrays", {k: np.asarray(v) for k, v in arrays.items()})

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def subset(self, indices: Iterable[int]) -> PerText:
        idx = np.asarray(list(indices), dtype=np.int64)
        return PerText(**{k: v[idx] for k, v in self.arrays.items()})


@dataclass(frozen=True)
class AttackInputs:
    """Everything an attack may read: the texts and their views."""

    texts: list[str]
    target: TokenScores  # the target model on the texts
    lowercase: TokenScores | None = None  # the target model on the lowercased texts
    reference: TokenScores | None = None  # the reference model on the texts
    extra: Mapping[str, Any] = field(default_factory=dict)  # registered views by name

    def view(self, name: str) -> Any:
        """The view ``name``; reading one not declared in ``needs`` fails here."""
        if not self.has(name):
            raise ValueError(
                f"the '{name}' view was not computed (declare it in the attack's needs)"
            )
        return getattr(self, name) if name in BUILTIN_VIEWS else self.extra[name]

    def has(self, name: str) -> bool:
        """Whether the view ``name`` was computed."""
        value = getattr(self, name) if name in BUILTIN_VIEWS else self.extra.get(name)
        return value is not None

    def subset(self, indices: Iterable[int]) -> AttackInputs:
        """The same inputs for the texts at ``indices``, in that order."""
        idx = [int(i) for i in indices]
        sub = lambda v: None if v is None else v.subset(idx)  # noqa: E731
        return AttackInputs(
            [self.texts[i] for i in idx],
            self.target.subset(idx),
            sub(self.lowercase),
            sub(self.reference),
            {k: v.subset(idx) for k, v in self.extra.items()},
        )


@dataclass(frozen=True)
class Attack:
    name: str
    fn: Callable[..., np.ndarray]
    description: str
    needs: frozenset[str] = frozenset()
    defaults: dict[str, float] = field(default_factory=dict)
    cost: str = "the target pass (shared)"
    opt_in: bool = False  # expensive: run only when named, never under "all"

    def requires(self) -> tuple[str, ...]:
        """The settings this attack's views require (e.g. ``("reference",)``)."""
        out: list[str] = []
        for view in sorted(self.needs):
            out += BUILTIN_VIEWS[view] if view in BUILTIN_VIEWS else VIEWS.get(view).requires
        return tuple(dict.fromkeys(out))


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
            if not inputs.has(view):
                raise InputError(f"attack '{self.attack.name}' needs the {view} view")
        return np.asarray(self.attack.fn(inputs, **self.params), dtype=np.float64)


ATTACKS: Registry[Attack] = Registry("attack")


AttackFn = Callable[..., np.ndarray]  # (AttackInputs, **params) -> one score per text


def register(
    name: str,
    *,
    description: str,
    needs: tuple[str, ...] = (),
    cost: str = "the target pass (shared)",
    opt_in: bool = False,
    **defaults: float,
) -> Callable[[AttackFn], AttackFn]:
    """Register an attack function under ``name``; keyword defaults become its settable params.

    ``needs`` names views (built in, or registered before the attack); ``cost`` says what the
    attack costs in forward passes per text beyond what it shares. An ``opt_in`` attack costs
    many passes per text (sampling, neighbours, gradients): ``"all"`` leaves it out, and it
    runs only when named.
    """
    unknown = set(needs) - set(BUILTIN_VIEWS) - set(VIEWS.names())
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)} (register a view first)")

    def deco(fn: AttackFn) -> AttackFn:
        attack = Attack(name, fn, description, frozenset(needs), dict(defaults), cost, opt_in)
        ATTACKS.add(name, attack)
        return fn

    return deco


def parse_attacks(spec: str) -> list[AttackSpec]:
    """Parse ``"all"`` (every attack but the opt-in ones) or a comma list like
    ``"loss,min_k:k=0.1,min_k_pp"``; ``all`` may be one item of the list
    (``"all,gradnorm,rmia:models=2"``), and an attack it already holds is not repeated.

    Raises
    ------
    UnknownNameError
        An unknown attack, with a "did you mean".
    InputError
        An unknown or malformed parameter.
    """
    items = [s.strip() for s in spec.split(",") if s.strip()]
    out = (
        [AttackSpec(a, dict(a.defaults)) for a in ATTACKS if not a.opt_in] if "all" in items else []
    )
    from_all = {s.column for s in out}
    for item in items:
        if item == "all":
            continue
        named = _parse_one(item)
        if named.column not in from_all:
            out.append(named)
    if not out:
        raise InputError("no attack named")
    columns = [s.column for s in out]
    if len(set(columns)) != len(columns):
        raise InputError(f"an attack is named twice: {', '.join(columns)}")
    return out


def named_attacks(spec: str) -> set[str]:
    """The columns named in ``spec`` one by one (not through ``all``)."""
    rest = ",".join(s for s in spec.split(",") if s.strip() and s.strip() != "all")
    return {s.column for s in parse_attacks(rest)} if rest else set()


def _parse_one(item: str) -> AttackSpec:
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
            raise InputError(f"attack '{name}': '{key}' must be a number, got '{value}'") from None
    _check_params(name, params)
    return AttackSpec(attack, params)


def default_attacks() -> list[str]:
    """The attacks ``"all"`` runs: every registered one but the opt-in ones."""
    return [a.name for a in ATTACKS if not a.opt_in]


def opt_in_attacks() -> list[str]:
    """The expensive attacks that run only when named."""
    return [a.name for a in ATTACKS if a.opt_in]


def _check_params(name: str, params: dict[str, float]) -> None:
    for key, value in params.items():
        rule = PARAM_RULES.get((name, key)) or PARAM_RULES.get(key)
        if rule is not None and not rule[0](value):
            raise InputError(f"attack '{name}': {key} must be {rule[1]}, got {value:g}")


GRAD_NORMS = (1.0, 2.0, float("inf"))  # the norms the gradnorm view computes


def _fraction(v: float) -> bool:
    return 0 < v <= 1


def _flag(v: float) -> bool:
    return v in (0, 1)


# parameter -> (check, what it must be); an (attack, parameter) entry overrides the shared one.
# Checked when the attack list is parsed, before any run dir exists.
PARAM_RULES: dict[str | tuple[str, str], tuple[Callable[[float], bool], str]] = {
    "k": (_fraction, "in (0, 1]"),  # fractions of a text's tokens
    "far": (_fraction, "in (0, 1]"),
    "local": (_fraction, "in (0, 1]"),
    "gamma": (lambda v: v >= 0, ">= 0"),  # con_recall: gamma = 0 is recall
    "a": (lambda v: v > 0, "> 0"),  # dc_pdd's clip
    "fixed_variance": (_flag, "0 or 1"),
    "online": (_flag, "0 or 1"),
    "models": (lambda v: v >= 0 and v == int(v), "a whole number >= 0 (0: all)"),  # shadows
    "p": (lambda v: v in GRAD_NORMS, "1, 2 or inf"),  # gradnorm's norm, as MIMIR allows it
    "zlib": (_flag, "0 or 1"),  # samia's zlib variant: a switch
    ("rmia", "gamma"): (lambda v: v > 0, "> 0"),
    ("rmia", "a"): (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


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
