"""``adaptd log``: inspect the embedded stream log on disk (no daemon needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def log() -> None:
    """Inspect the file log under a data directory."""


@log.command()
@click.option("--data-dir", type=click.Path(path_type=Path), required=True, help="The daemon's data directory.")
def verify(data_dir: Path) -> None:
    """Check every frame (length, offset, CRC) of DATA_DIR/log; read-only.

    Exit 0 when clean (a torn tail, which the next start cuts, is reported but clean),
    1 when a frame is corrupt, 2 when there is no log there.
    """
    from adaptd.streams.log.verify import verify_log

    log_dir = data_dir / "log"
    if not log_dir.is_dir():
        click.echo(f"adaptd: error: no log at {log_dir}: pass the daemon's --data-dir", err=True)
        sys.exit(2)
    frames, findings = verify_log(log_dir)
    for f in findings:
        click.echo(f"{f.kind}: {f.segment} byte {f.position} (offset {f.offset}): {f.reason}")
    corrupt = [f for f in findings if f.kind == "corrupt"]
    click.echo(f"{frames} valid frames; {len(corrupt)} corrupt; "
               f"{len(findings) - len(corrupt)} torn tail{'s' if len(findings) - len(corrupt) != 1 else ''}")
    sys.exit(1 if corrupt else 0)
