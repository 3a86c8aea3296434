"""Run the web process: check the configuration, then serve under gunicorn on $PORT."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from orchestrator.config import Settings, load_settings_or_exit


class WebServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with the app factory, started only once the settings are known good."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from webapp import create_app

        return create_app(self.settings)


def main() -> None:
    settings = load_settings_or_exit()
    options = {
        "bind": f"0.0.0.0:{settings.port}",
        "workers": 2,
        "threads": 4,
        "worker_class": "gthread",
        "graceful_timeout": 8,
        "timeout": 60,
        "accesslog": "-",
        "loglevel": "info",
    }
    WebServer(settings, options).run()


if __name__ == "__main__":
    main()
