"""``memaudit shadows train``: shadow (reference) models for lira, lira_offline and rmia."""

from __future__ import annotations

import json

import typer

from memaudit.mia.config import ShadowsTrainConfig

from .common import StageBars, config_command, out_console

shadows_app = typer.Typer(
    no_args_is_help=True,
    help="Shadow models: each trained on a seeded half of a pool (for `mia --shadows`).",
)


@config_command(shadows_app, "train", ShadowsTrainConfig)
def shadows_train(cfg: ShadowsTrainConfig) -> None:
    """Train N shadow models, each with the lab trainer on a seeded half of the pool.

    Every pool text is in exactly half of the shadows (LiRA's balanced membership); the
    membership matrix is stored beside the models. Killed and restarted with the same
    settings, finished shadows are kept and the unfinished one resumes from its checkpoint.
    """
    from memaudit.attacks.shadows import RECORD
    from memaudit.mia.shadows import run_shadows_train

    with StageBars() as bars:
        path = run_shadows_train(cfg, progress=bars)
    record = json.loads((path / RECORD).read_text())
    out_console.print(f"{record['n_models']} shadows on {record['n_texts']} texts: {path}")
