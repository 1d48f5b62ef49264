"""Every view the chosen attacks need, each computed once for all of them.

An attack declares the views it needs in ``needs``: the built-in ``lowercase`` and
``reference`` (``score_views``: one forward pass per text per model) or a view registered in
the attack's module (``base.register_view``), which ``prepare_views`` checks before any output
and ``compute_views`` computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from memaudit.errors import InputError
from memaudit.io.progress import Progress
from memaudit.models.base import CausalLM
from memaudit.scoring.engine import ScoreSettings, ScoreStats, score_texts

from .base import (
    BUILTIN_VIEWS,
    VIEWS,
    AttackInputs,
    AttackSpec,
    alternatives,
    describe_requirement,
    named_attacks,
    opt_in_attacks,
    parse_attacks,
)

TokenIds = Sequence[Sequence[int]]


def score_views(
    target: CausalLM,
    reference: CausalLM | None,
    texts: list[str],
    settings: ScoreSettings,
    *,
    lowercase: bool,
    cache_root: str | Path | None = None,
    token_ids: tuple[TokenIds | None, TokenIds | None] = (None, None),
    progress: Progress | None = None,
) -> tuple[AttackInputs, dict[str, ScoreStats]]:
    """Every scored view the attacks need, one forward pass per text per model.

    The lowercased texts go through the target model in the same call as the texts, so a
    text that is already lower case is scored once and the batches stay full.
    """
    n = len(texts)
    target_texts = list(texts)
    ids = None if token_ids[0] is None else list(token_ids[0])
    if lowercase:
        lowered = [x.lower() for x in texts]
        target_texts += lowered
        ids = None if ids is None else [*ids, *target.encode(lowered)]
    both, stats = score_texts(
        target,
        target_texts,
        settings,
        cache_root=cache_root,
        token_ids=ids,
        progress=progress,
        stage="scoring target",
    )
    view_stats = {"target": stats}
    views = {"target": both.subset(range(n)) if lowercase else both}
    if lowercase:
        views["lowercase"] = both.subset(range(n, 2 * n))
    if reference is not None:
        views["reference"], view_stats["reference"] = score_texts(
            reference,
            texts,
            settings,
            cache_root=cache_root,
            token_ids=token_ids[1],
            progress=progress,
            stage="scoring reference",
        )
    return AttackInputs(
        list(texts), views["target"], views.get("lowercase"), views.get("reference")
    ), view_stats


class TokenCounts(Protocol):
    """Occurrences of token sequences in a corpus (``memaudit.index.CorpusIndex`` is one)."""

    def count(self, query: Sequence[int]) -> int: ...

    def __len__(self) -> int: ...  # tokens in the corpus


@runtime_checkable
class HasWarnings(Protocol):
    """A view's prepared state may carry warnings; mia puts them into results.json."""

    warnings: list[str]


@dataclass(frozen=True)
class ViewContext:
    """What a registered view may use: the models, the texts, the run's settings.

    ``options`` holds the command's resolved settings by name (``MiaConfig.to_dict()``);
    a view reads the ones it declared in ``requires`` and its own knobs from there.
    ``token_ids`` / ``reference_token_ids`` are each model's ids of the texts, already checked.
    ``index`` is the command's opened corpus index (``--index``), if any.
    """

    target: CausalLM
    texts: list[str]
    settings: ScoreSettings
    options: Mapping[str, Any] = field(default_factory=dict)
    reference: CausalLM | None = None
    token_ids: Sequence[Sequence[int]] | None = None
    reference_token_ids: Sequence[Sequence[int]] | None = None
    cache_root: str | Path | None = None
    progress: Progress | None = None
    index: TokenCounts | None = None

    def option(self, name: str) -> Any:
        """A setting by name; a view reading one the command does not have is a bug."""
        if name not in self.options:
            raise KeyError(f"the command has no setting '{name}'")
        return self.options[name]


def select_attacks(
    spec: str, *, given: Callable[[str], bool], flag: Callable[[str], str]
) -> tuple[list[AttackSpec], list[str]]:
    """Parse the attack list and check that the settings their views require are given.

    ``given(setting)`` says whether a setting was given, ``flag(setting)`` names its flag.
    A requirement ``"a|b"`` is met by either setting. Under ``all``, attacks whose required
    settings are missing are left out with a note; named explicitly, such an attack is an
    error naming the flag to pass. ``all`` never runs
    the opt-in (expensive) attacks; a note names each.
    """
    specs = parse_attacks(spec)
    named = named_attacks(spec)
    from_all = "all" in (s.strip() for s in spec.split(","))
    kept, notes = [], []
    if from_all:
        notes += [
            f"attack '{n}' left out: expensive, name it in --attacks"
            for n in opt_in_attacks()
            if not any(c.split(":")[0] == n for c in named)
        ]
    for s in specs:
        missing = [
            describe_requirement(r, flag)
            for r in s.attack.requires()
            if not any(given(a) for a in alternatives(r))
        ]
        if not missing:
            kept.append(s)
        elif s.column in named:
            raise InputError(f"attack '{s.column}' needs {', '.join(missing)}, which was not given")
        else:
            notes.append(f"attack '{s.column}' left out: no {', '.join(missing)} given")
    return kept, notes


def needed_views(specs: Sequence[AttackSpec]) -> list[str]:
    """The registered (non built-in) views the attacks need, in registration order."""
    needs = set().union(*(s.attack.needs for s in specs)) - set(BUILTIN_VIEWS)
    return [name for name in VIEWS.names() if name in needs]


def prepare_views(specs: Sequence[AttackSpec], ctx: ViewContext) -> dict[str, Any]:
    """Read and check every registered view's inputs; runs before any output is written."""
    return {name: VIEWS.get(name).prepare(ctx) for name in needed_views(specs)}


def view_warnings(prepared: Mapping[str, Any]) -> list[str]:
    """The warnings the views' ``prepare`` steps found (e.g. a prefix text that is scored too)."""
    states = [s for s in prepared.values() if isinstance(s, HasWarnings)]
    return [w for s in states for w in s.warnings]


def compute_views(
    specs: Sequence[AttackSpec], ctx: ViewContext, prepared: Mapping[str, Any]
) -> tuple[AttackInputs, dict[str, ScoreStats]]:
    """Every view the attacks need: the built-in ones in one pass per text per model, then
    each registered one once.
    """
    needs = set().union(*(s.attack.needs for s in specs))
    inputs, stats = score_views(
        ctx.target,
        ctx.reference if "reference" in needs else None,
        ctx.texts,
        ctx.settings,
        lowercase="lowercase" in needs,
        cache_root=ctx.cache_root,
        token_ids=(ctx.token_ids, ctx.reference_token_ids),
        progress=ctx.progress,
    )
    extra: dict[str, Any] = {}
    for name in needed_views(specs):
        extra[name], view_stats = VIEWS.get(name).compute(ctx, prepared[name])
        stats.update({f"{name}/{k}": v for k, v in view_stats.items()})
    return AttackInputs(
        inputs.texts, inputs.target, inputs.lowercase, inputs.reference, extra
    ), stats
