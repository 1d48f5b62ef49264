"""The ``memaudit`` command line, assembled: one Typer app with every command group added.

All work happens in the library; the command modules only turn configs into calls and
results into terminal output, and errors into one-line messages with exit code 2.
"""

from __future__ import annotations

import typer

from . import convert, diffusion, edit, index, lab, mia, probe, shadows, unlearn

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure, prove and remove training-data memorization in generative models.",
)


def _show_version(value: bool) -> None:
    if value:
        from memaudit.version import __version__

        typer.echo(f"memaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Measure, prove and remove training-data memorization in generative models."""


for commands in (mia.app, lab.app, index.app, unlearn.app, edit.app):
    app.add_typer(commands)  # top-level commands: mia, extract, train, demo, overlap, unlearn, ...
app.add_typer(lab.corpus_app, name="corpus")
app.add_typer(mia.traps_app, name="traps")
app.add_typer(lab.canaries_app, name="canaries")
app.add_typer(lab.lab_app, name="lab")
app.add_typer(index.index_app, name="index")
app.add_typer(probe.probe_app, name="probe")
app.add_typer(diffusion.diffusion_app, name="diffusion")
app.add_typer(shadows.shadows_app, name="shadows")
app.add_typer(convert.convert_app, name="convert")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
