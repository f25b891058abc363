"""The ``adaptd`` console script: say what to install before anything heavy is imported.

``pip install adaptd`` is the SDK alone; the daemon's commands need the ``adaptd.daemon`` extra
and ``adaptd dash`` the ``adaptd.tui`` extra. Without them a command prints which extra to
install (and which modules are missing) and exits 2, instead of a ModuleNotFoundError.
"""

from __future__ import annotations

import importlib.util
import sys

#: Import names each extra brings, as the commands need them.
EXTRAS = {
    "daemon": ("click", "duckdb", "pyarrow", "fastapi", "uvicorn", "pydantic_settings", "numpy", "scipy",
               "sklearn", "ddsketch", "opentelemetry.proto", "prometheus_client"),
    "tui": ("click", "textual", "textual_plotext"),
    "kafka": ("faust", "confluent_kafka"),
}
#: The extras a command needs; commands not named here need the daemon's.
COMMAND_EXTRAS = {"dash": ("tui",), "worker": ("daemon", "kafka"), "demo": ("daemon", "tui")}


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """The import names among ``names`` that cannot be found (empty when all are there)."""
    out = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            found = False
        if not found:
            out.append(name)
    return out


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word not starting with '-'), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> None:
    """Check the chosen command's extras, then run the click CLI.

    Exits 2 with ``pip install 'adaptd[EXTRA]'`` when an extra is missing.
    """
    args = sys.argv[1:] if argv is None else argv
    command = command_of(args)
    extras = COMMAND_EXTRAS.get(command or "", ("daemon",))
    for extra in extras:
        missing = missing_modules(EXTRAS[extra])
        if missing:
            what = f"adaptd {command}" if command else "adaptd"
            sys.stderr.write(f"adaptd: error: {what} needs the '{extra}' extra, which is not installed "
                             f"(missing: {', '.join(missing)}): pip install 'adaptd[{extra}]'\n")
            sys.exit(2)
    from adaptd.daemon.cli.main import main as cli_main

    cli_main(args=args, prog_name="adaptd")
