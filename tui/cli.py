"""``adaptd dash``: the Textual dashboard for a running daemon.

Kept import-light (Textual loads only when the command runs), since ``adaptd.daemon.cli.main``
registers it at its own import.
"""

from __future__ import annotations

import sys

import click

DEFAULT_URL = "http://127.0.0.1:7710"


@click.command()
@click.option("--url", envvar="ADAPTD_URL", default=DEFAULT_URL, show_default=True, show_envvar=True,
              help="Daemon base URL.")
@click.option("--token", envvar="ADAPTD_TOKEN", show_envvar=True, help="Bearer token.")
@click.option("--refresh", "poll_s", type=click.FloatRange(0.2, 60), default=2.0, show_default=True,
              help="Seconds between refreshes.")
def dash(url: str, token: str | None, poll_s: float) -> None:
    """Open the live dashboard (overview, routes, signals, adaptations, optimizer, tail).

    It keeps running while the daemon is down, shows the last state as stale and
    reconnects by itself.
    """
    if not url.startswith(("http://", "https://")):
        click.echo(f"adaptd: error: --url {url!r} must start with http:// or https://", err=True)
        sys.exit(2)
    try:
        from adaptd.tui.app import make_app
    except ImportError as exc:  # textual is an optional dependency
        click.echo(f"adaptd: error: the dashboard needs the tui extra ({exc.name} missing):"
                   " pip install 'adaptd[tui]'", err=True)
        sys.exit(2)
    make_app(url, token, poll_s=poll_s).run()
