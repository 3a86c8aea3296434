"""The ``orchestrator`` command: database migrations and the robot simulator."""

from __future__ import annotations

import sys

import click

from .config import ConfigError, Settings, load_settings


def settings_or_exit() -> Settings:
    """Load the settings from the environment, or exit with one line naming the problem."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    if settings.dev_defaults_used:
        click.echo(
            "APP_ENV=development: using local defaults for " + ", ".join(settings.dev_defaults_used),
            err=True,
        )
    return settings


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

    settings = settings_or_exit()
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
