"""The ``orchestrator`` command: database migrations and the robot simulator."""

from __future__ import annotations

import click

from .config import load_settings_or_exit


@click.group()
def main() -> None:
    """Robot-job orchestrator."""


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Migrate the database to the newest revision (the release process)."""
    from .migrate import upgrade

    settings = load_settings_or_exit()
    upgrade(settings.database_url, revision)
    click.echo(f"database migrated to {revision}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """Run the robot simulator (options as ``robot-simulator --help``)."""
    from .robot_simulator import main as simulator_main

    simulator_main(ctx.args)


if __name__ == "__main__":
    main()
