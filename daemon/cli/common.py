"""What every ``adaptd`` command shares: failing with one clear line and the right exit
code, calling the daemon, and the ``--url`` / ``--token`` options.

Exit codes, the same for every command:

- 0: success;
- 1 (``RUNTIME``): the command was right but could not be done: the daemon is down or
  unreachable, it refused the request (token, permission, unknown program or id, a
  rejected event, a server error), a job failed, the data cannot support the result;
- 2 (``USAGE``): the command line or the setup is wrong and the user fixes it there: a bad
  flag or value (whether click or the daemon's validation finds it: HTTP 400 / 422), a
  missing or invalid config, and whatever keeps ``adaptd up`` / ``worker`` from starting
  (a busy port, an unusable data dir, a stream log in use or out of reach).

Commands import this module; it imports no command, so there is no import cycle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

DEFAULT_URL = "http://127.0.0.1:7710"

#: Exit code of a runtime failure (daemon down, request refused, job failed).
RUNTIME = 1
#: Exit code of a usage error (bad flag or value, bad config, busy port, unusable data dir); click's own.
USAGE = 2

#: HTTP statuses that mean "a value the user passed is invalid": a usage error, wherever it is checked.
_INVALID_INPUT = (400, 422)


def fail(message: str, code: int = USAGE) -> NoReturn:
    """Print ``adaptd: error: message`` to stderr and exit ``code`` (default ``USAGE``, 2)."""
    click.echo(f"adaptd: error: {message}", err=True)
    sys.exit(code)


def fail_runtime(message: str) -> NoReturn:
    """Print ``adaptd: error: message`` to stderr and exit ``RUNTIME`` (1)."""
    fail(message, RUNTIME)


def unreachable(url: str, exc: Exception) -> NoReturn:
    """The daemon at ``url`` did not answer (``exc``: the transport error): exit 1."""
    fail_runtime(f"cannot reach the daemon at {url} ({exc.__class__.__name__}): start it with `adaptd up` or pass --url")


def refused(what: str, response: Any) -> NoReturn:
    """The daemon answered ``response`` (status >= 400) to ``what``: one line, and exit 2 when
    it judged a value the user passed invalid (400, 422), 1 for anything else it refused."""
    if response.status_code == 401:
        fail_runtime(f"the daemon refused the token ({detail(response)}): pass --token or set ADAPTD_TOKEN")
    code = USAGE if response.status_code in _INVALID_INPUT else RUNTIME
    fail(f"{what} answered {response.status_code}: {detail(response)}", code)


def client(url: str, token: str | None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10.0)


def request(url: str, token: str | None, method: str, path: str, **kwargs: Any) -> Any:
    """Call the daemon and return its JSON answer; a transport or HTTP failure prints one
    line and exits (``unreachable``, ``refused``)."""
    import httpx

    try:
        with client(url, token) as http:
            response = http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        unreachable(url, exc)
    if response.status_code >= 400:
        refused(f"{method} {path}", response)
    return response.json()


def detail(response: Any) -> str:
    """The ``detail`` of an error answer as one string (the start of the body if not JSON)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):  # not JSON, or JSON but not an object
        return response.text[:200]
    return detail if isinstance(detail, str) else json.dumps(detail)[:300]


url_option = click.option(
    "--url", envvar="ADAPTD_URL", default=DEFAULT_URL, show_default=True, show_envvar=True,
    help="Daemon base URL.",
)
token_option = click.option("--token", envvar="ADAPTD_TOKEN", show_envvar=True, help="Bearer token.")

#: Epilog of the commands that load the daemon's settings (``load_settings``).
SETTINGS_ENV = (
    "Environment: ADAPTD_CONFIG names the TOML config; every setting can also be given as ADAPTD_<NAME>"
    " (nested with __), e.g. ADAPTD_DATA_DIR, ADAPTD_PORT, ADAPTD_LOG__FSYNC=interval. Flags win over the"
    " environment, which wins over the file."
)
config_option = click.option(
    "--config", "config", type=click.Path(path_type=Path), envvar="ADAPTD_CONFIG", show_envvar=True,
    help="TOML config file.",
)
