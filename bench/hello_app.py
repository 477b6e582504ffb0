#!/usr/bin/env python3
"""The ceiling for any route: a minimal Flask app answering a constant JSON body.

`python bench/hello_app.py --port N` serves it exactly as `python -m app serve` serves Depot: through
app/http/server.py (waitress with Depot's limits, its JSON error task and its malloc arena limit) with the
settings `serve` uses by default (16 threads, 1000 connections, the same timeouts). What Depot answers on any
route can be at most what this answers, so bench/run.py reports Depot's figures as ratios to it.

`gunicorn -k gthread -w 1 --threads 16 bench.hello_app:app` serves the same app under gunicorn's threaded worker
with the same thread count, the comparison issue 15's first target is stated against.
"""
import argparse
import sys
from pathlib import Path

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BODY = b'{"ok":true,"message":"hello"}'

app = Flask(__name__)


@app.get("/hello")
def hello():
    return app.response_class(BODY, mimetype="application/json")


def main():
    from app.http.server import ServerSettings, serve
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="as `serve --threads` (16)")
    args = parser.parse_args()
    serve(app, ServerSettings(host=args.host, port=args.port, threads=args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
