"""The callback benchmark's baseline: a bare Flask endpoint under the web process's gunicorn.

``python -m bench.bare_web`` runs ``webapp.__main__.main()`` itself (the same settings check,
the same gunicorn options: workers, worker class, access log) with only the WSGI app
swapped for one route that reads the body and answers what the real endpoint answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import webapp.__main__ as web_main

if TYPE_CHECKING:
    from flask import Flask
    from flask.typing import ResponseReturnValue


def bare_app() -> Flask:
    # Imported in the worker, after gevent patched it, as webapp.create_app does.
    from flask import Flask, jsonify, request

    app = Flask("bare")

    @app.post("/api/robot/jobs/<job_id>/events")
    def events(job_id: str) -> ResponseReturnValue:
        request.get_data(cache=False)
        return jsonify({"status": "applied"}), 200

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    return app


def _load(self: Any) -> Flask:
    return bare_app()


def main() -> None:
    web_main.WebServer.load = _load  # type: ignore[method-assign]
    web_main.main()


if __name__ == "__main__":
    main()
