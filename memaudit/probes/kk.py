"""Knights and Knaves: puzzles with exactly one solution, their perturbations, and an answer parser.

A puzzle has N people; each makes one statement, a formula over leaves "person k is a
knight/knave" with not / and / or / implies / iff. A knight's statement is true, a knave's
false, so an assignment of roles is a solution when every speaker's role equals the truth
of their statement. Solutions are found by brute force over the 2^N assignments and only
puzzles with exactly one are kept. Perturbations (Xie et al. 2024) either change the logic
(one statement, or one leaf) so that the puzzle keeps exactly one solution and it differs,
or only the language (names, role words, statement order) so that it means the same.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from memaudit.errors import InputError

NAMES = (
    "Alice",
    "Bob",
    "Carol",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Iris",
    "Jack",
    "Kate",
    "Liam",
    "Mia",
    "Noah",
    "Olga",
    "Paul",
    "Quinn",
    "Rosa",
    "Sam",
    "Tina",
    "Uma",
    "Victor",
    "Wendy",
    "Xavier",
    "Yara",
    "Zoe",
)
ROLES = (("knight", "knave"), ("truth-teller", "liar"), ("angel", "devil"), ("saint", "sinner"))
OPS = ("not", "and", "or", "implies", "iff")


@dataclass(frozen=True)
class Puzzle:
    """Statements as nested tuples: ``("is", k, True)`` (person k is a knight), ``("not", e)``,
    ``(op, a, b)``.
    """

    statements: tuple  # one formula per person
    names: tuple[str, ...]
    roles: tuple[str, str] = ROLES[0]
    order: tuple[int, ...] = ()  # the order statements are told in (default: by person)
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def n(self) -> int:
        return len(self.statements)

    def solutions(self) -> list[tuple[bool, ...]]:
        return solve(self.statements)

    def solution(self) -> tuple[bool, ...]:
        sols = self.solutions()
        if len(sols) != 1:
            raise InputError(f"puzzle has {len(sols)} solutions, not exactly one")
        return sols[0]


def evaluate(expr, assignment) -> bool:
    kind = expr[0]
    if kind == "is":
        return assignment[expr[1]] == expr[2]
    if kind == "not":
        return not evaluate(expr[1], assignment)
    a, b = evaluate(expr[1], assignment), evaluate(expr[2], assignment)
    return {"and": a and b, "or": a or b, "implies": (not a) or b, "iff": a == b}[kind]


def solve(statements) -> list[tuple[bool, ...]]:
    """Every assignment (True = knight) under which each speaker is a knight iff their statement
    holds.
    """
    n = len(statements)
    return [
        a
        for a in itertools.product((True, False), repeat=n)
        if all(a[k] == evaluate(s, a) for k, s in enumerate(statements))
    ]


def random_formula(rng: random.Random, n: int, depth: int, speaker: int):
    """A random formula of at most ``depth`` operators over leaves about the other people (or
    the speaker).
    """
    if depth == 0 or rng.random() < 0.3:
        others = [k for k in range(n) if k != speaker] or [speaker]
        return ("is", rng.choice(others), rng.random() < 0.5)
    op = rng.choice(OPS)
    if op == "not":
        return ("not", random_formula(rng, n, depth - 1, speaker))
    return (
        op,
        random_formula(rng, n, depth - 1, speaker),
        random_formula(rng, n, depth - 1, speaker),
    )


def make_puzzle(rng: random.Random, n: int, *, depth: int = 2, max_tries: int = 10_000) -> Puzzle:
    """A puzzle of ``n`` people with exactly one solution that both logic perturbations can change
    (rejection sampling)."""
    if not 2 <= n <= 12:
        raise InputError(f"people must be between 2 and 12, got {n}")
    names = tuple(rng.sample(NAMES, n))
    for _ in range(max_tries):
        statements = tuple(random_formula(rng, n, depth, k) for k in range(n))
        if len(solve(statements)) != 1:
            continue
        p = Puzzle(statements, names, ROLES[0], tuple(range(n)))
        try:
            for kind in LOGIC_PERTURBATIONS:
                PERTURBATIONS[kind](p, random.Random(0), tries=50)
        except InputError:
            continue
        return p
    raise InputError(
        f"no puzzle with a unique solution found in {max_tries} tries (people={n}, depth={depth})"
    )


def make_puzzles(
    people: range | list[int], n: int, *, depth: int = 2, seed: int = 0
) -> list[Puzzle]:
    """``n`` puzzles per number of people, seeded."""
    rng = random.Random(seed)
    return [
        replace(make_puzzle(rng, p, depth=depth), meta={"id": f"kk-{p}-{i}"})
        for p in people
        for i in range(n)
    ]


# ---- perturbations ---------------------------------------------------------------------------


def _leaves(expr, path=()):
    if expr[0] == "is":
        yield path
        return
    for i, child in enumerate(expr[1:], start=1):
        yield from _leaves(child, path + (i,))


def _replace_at(expr, path, new):
    if not path:
        return new
    i = path[0]
    parts = list(expr)
    parts[i] = _replace_at(expr[i], path[1:], new)
    return tuple(parts)


def _logic_changed(p: Puzzle, rng: random.Random, edit, tries: int = 1000) -> Puzzle:
    """Apply ``edit`` until the puzzle has exactly one solution and it is a different one."""
    old = p.solution()
    for _ in range(tries):
        statements = edit(p, rng)
        sols = solve(statements)
        if len(sols) == 1 and sols[0] != old:
            return replace(p, statements=statements)
    raise InputError("no perturbation keeps a unique, changed solution for this puzzle")


def perturb_statement(p: Puzzle, rng: random.Random, tries: int = 1000) -> Puzzle:
    """Replace one person's whole statement with a new random one."""

    def edit(p, rng):
        k = rng.randrange(p.n)
        depth = max(1, _depth(p.statements[k]))
        return p.statements[:k] + (random_formula(rng, p.n, depth, k),) + p.statements[k + 1 :]

    return _logic_changed(p, rng, edit, tries)


def perturb_leaf(p: Puzzle, rng: random.Random, tries: int = 1000) -> Puzzle:
    """Replace one leaf of one statement (another person, or the other role)."""

    def edit(p, rng):
        k = rng.randrange(p.n)
        path = rng.choice(list(_leaves(p.statements[k])))
        leaf = _get(p.statements[k], path)
        options = [("is", k, r) for k in range(p.n) for r in (True, False) if ("is", k, r) != leaf]
        new = rng.choice(options)
        return p.statements[:k] + (_replace_at(p.statements[k], path, new),) + p.statements[k + 1 :]

    return _logic_changed(p, rng, edit, tries)


def perturb_names(p: Puzzle, rng: random.Random) -> Puzzle:
    """Other names; the same logic and solution."""
    return replace(p, names=tuple(rng.sample([x for x in NAMES if x not in p.names], p.n)))


def perturb_roles(p: Puzzle, rng: random.Random) -> Puzzle:
    """Other role words (e.g. angel/devil); the same logic and solution."""
    return replace(p, roles=rng.choice([r for r in ROLES if r != p.roles]))


def perturb_order(p: Puzzle, rng: random.Random) -> Puzzle:
    """The statements told in another order; the same logic and solution."""
    order = list(p.order or range(p.n))
    while p.n > 1 and order == list(p.order or range(p.n)):
        rng.shuffle(order)
    return replace(p, order=tuple(order))


PERTURBATIONS: dict[str, Callable[..., Puzzle]] = {
    "statement": perturb_statement,
    "leaf": perturb_leaf,
    "names": perturb_names,
    "roles": perturb_roles,
    "order": perturb_order,
}
LOGIC_PERTURBATIONS = ("statement", "leaf")


def _get(expr, path):
    for i in path:
        expr = expr[i]
    return expr


def _depth(expr) -> int:
    return 0 if expr[0] == "is" else 1 + max(_depth(c) for c in expr[1:])


# ---- text -------------------------------------------------------------------------------------


def render_formula(expr, p: Puzzle, top: bool = True) -> str:
    good, bad = p.roles
    kind = expr[0]
    if kind == "is":
        return f"{p.names[expr[1]]} is a {good if expr[2] else bad}"
    if kind == "not":
        return f"it is false that {render_formula(expr[1], p, False)}"
    a, b = render_formula(expr[1], p, False), render_formula(expr[2], p, False)
    text = {
        "and": f"{a} and {b}",
        "or": f"{a} or {b}",
        "implies": f"if {a} then {b}",
        "iff": f"{a} if and only if {b}",
    }[kind]
    return text if top else f"({text})"


def render_puzzle(p: Puzzle) -> str:
    good, bad = p.roles
    people = ", ".join(p.names[:-1]) + f" and {p.names[-1]}"
    lines = [
        f"An island is inhabited only by {good}s and {bad}s. {good.capitalize()}s always tell the "
        f"truth and {bad}s always lie.",
        f"You meet {p.n} inhabitants: {people}.",
    ]
    lines += [
        f'{p.names[k]} says: "{render_formula(p.statements[k], p)}".'
        for k in (p.order or range(p.n))
    ]
    lines.append(f"Who is a {good} and who is a {bad}?")
    return "\n".join(lines)


def render_answer(p: Puzzle, solution: tuple[bool, ...] | None = None) -> str:
    good, bad = p.roles
    solution = p.solution() if solution is None else solution
    return " ".join(
        f"({k + 1}) {p.names[k]} is a {good if solution[k] else bad}." for k in range(p.n)
    )


ANSWER_RE = re.compile(r"\((\d+)\)\s+([A-Z][a-z]+) is an? ([a-z-]+)\.")


def parse_answer(text: str, p: Puzzle) -> tuple[bool, ...] | None:
    """Roles read from ``(1) Name is a knight. (2) ...``; None when any person is missing,
    repeated, unknown or given a role word of another puzzle.

    >>> p = Puzzle((("is", 1, True), ("is", 0, True)), ("Alice", "Bob"))
    >>> parse_answer("(1) Alice is a knight. (2) Bob is a knave.", p)
    (True, False)
    >>> parse_answer("(1) Alice is a knight.", p) is None
    True
    """
    found: dict[str, bool] = {}
    for _, name, role in ANSWER_RE.findall(text):
        if name not in p.names or name in found or role not in p.roles:
            return None
        found[name] = role == p.roles[0]
        if len(found) == p.n:
            break
    if len(found) != p.n:
        return None
    return tuple(found[name] for name in p.names)


def to_row(p: Puzzle, **extra) -> dict:
    """A JSONL row: the text, the answer, and everything needed to rebuild and perturb the
    puzzle.
    """
    return {
        "id": p.meta.get("id"),
        "text": render_puzzle(p) + "\nAnswer: " + render_answer(p),
        "prompt": render_puzzle(p) + "\nAnswer:",
        "answer": render_answer(p),
        "statements": p.statements,
        "names": list(p.names),
        "roles": list(p.roles),
        "order": list(p.order),
        "people": p.n,
        **extra,
    }


def from_row(row: dict, *, where: str = "") -> Puzzle:
    """Rebuild a puzzle from its row, checking that it is well formed and has exactly one
    solution.
    """
    try:
        statements = tuple(_as_tuple(s) for s in row["statements"])
        names, roles = tuple(row["names"]), tuple(row["roles"])
        p = Puzzle(
            statements,
            names,
            roles,
            tuple(row.get("order") or range(len(statements))),
            meta={"id": row.get("id")},
        )
        if len(names) != len(statements) or len(roles) != 2:
            raise ValueError("names and statements differ in number, or roles are not a pair")
        _check(statements, len(names))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise InputError(f"malformed puzzle ({e})", path=where or None) from None
    if len(p.solutions()) != 1:
        raise InputError(
            f"puzzle has {len(p.solutions())} solutions, not exactly one", path=where or None
        )
    return p


def _as_tuple(x):
    return tuple(_as_tuple(v) if isinstance(v, list) else v for v in x)


def _check(statements, n: int) -> None:
    def walk(e):
        if not isinstance(e, tuple) or not e:
            raise ValueError(f"not a formula: {e!r}")
        if e[0] == "is":
            if (
                len(e) != 3
                or not isinstance(e[1], int)
                or not 0 <= e[1] < n
                or not isinstance(e[2], bool)
            ):
                raise ValueError(f"bad leaf {e!r}")
        elif e[0] == "not" and len(e) == 2:
            walk(e[1])
        elif e[0] in OPS[1:] and len(e) == 3:
            walk(e[1])
            walk(e[2])
        else:
            raise ValueError(f"unknown operator in {e!r}")

    for s in statements:
        walk(s)
