"""What every ``adaptd`` command shares: failing with one clear line, calling the daemon,
and the ``--url`` / ``--token`` options.

Commands import this module; it imports no command, so there is no import cycle.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click

DEFAULT_URL = "http://127.0.0.1:7710"


def fail(message: str) -> NoReturn:
    """Print ``adaptd: error: message`` to stderr and exit 2."""
    click.echo(f"adaptd: error: {message}", err=True)
    sys.exit(2)


def client(url: str, token: str | None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10.0)


def request(url: str, token: str | None, method: str, path: str, **kwargs: Any) -> Any:
    """Call the daemon; turn every transport or HTTP failure into one clear line."""
    import httpx

    try:
        with client(url, token) as http:
            response = http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        fail(f"cannot reach the daemon at {url} ({exc.__class__.__name__}): start it with `adaptd up` or pass --url")
    if response.status_code == 401:
        fail(f"the daemon refused the token ({detail(response)}): pass --token or set ADAPTD_TOKEN")
    if response.status_code >= 400:
        fail(f"{method} {path} answered {response.status_code}: {detail(response)}")
    return response.json()


def detail(response: Any) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200]
    return detail if isinstance(detail, str) else json.dumps(detail)[:300]


url_option = click.option(
    "--url", default=lambda: os.environ.get("ADAPTD_URL", DEFAULT_URL), show_default=DEFAULT_URL,
    help="Daemon base URL (env ADAPTD_URL).",
)
token_option = click.option(
    "--token", default=lambda: os.environ.get("ADAPTD_TOKEN"), help="Bearer token (env ADAPTD_TOKEN)."
)
