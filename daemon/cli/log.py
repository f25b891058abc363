"""``adaptd log``: check and repair the embedded stream log on disk (no daemon needed)."""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from pathlib import Path

import click
import orjson

_data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), required=True, envvar="ADAPTD_DATA_DIR",
                                show_envvar=True, help="The daemon's data directory.")


@click.group()
def log() -> None:
    """Check (verify) and repair the file log under a data directory."""


@log.command()
@_data_dir_option
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


#: Namespace of the ids of the dead letters that stand in for records lost to corruption.
REPAIR_NS = uuid.UUID("0b7f3c1e-8d2a-4e5b-9f6c-2a1d4e7b8c90")


def lost_record(offset: int, reason: str, file: Path, timestamp_ms: int) -> bytes:
    """The placeholder for a record ``adaptd log repair`` could not read: a dead letter
    (no tenant: whose record it was cannot be read either) naming the quarantine file.

    Deterministic in its inputs, so a replay of the repaired log rebuilds the same row.
    """
    ts = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    return orjson.dumps({
        "kind": "dead_letter", "id": str(uuid.uuid5(REPAIR_NS, f"{offset}")), "ts": ts.isoformat(),
        "tenant": "", "source": "adaptd.log.repair",
        "reason": f"record at log offset {offset} lost to corruption ({reason}); its bytes are in {file}",
        "payload": "",
    })


@log.command()
@_data_dir_option
def repair(data_dir: Path) -> None:
    """Move the unreadable bytes of DATA_DIR/log to DATA_DIR/log/quarantine; keep every readable record.

    Every later record keeps its offset (a lost record's offset holds a dead letter that
    names the quarantine file), so the read model and every consumer go on where they
    were.  Stop the daemon first.  Exit 0 when the log is clean afterwards (also when
    there was nothing to repair), 1 when damage remains, 2 when there is no log or it is
    in use.
    """
    from adaptd.streams.log.base import LogError
    from adaptd.streams.log.repair import repair_log
    from adaptd.streams.log.verify import verify_log

    log_dir = data_dir / "log"
    if not log_dir.is_dir():
        click.echo(f"adaptd: error: no log at {log_dir}: pass the daemon's --data-dir", err=True)
        sys.exit(2)
    try:
        cuts = repair_log(log_dir, lost_record)
    except LogError as exc:
        click.echo(f"adaptd: error: {exc}", err=True)
        sys.exit(2)
    for cut in cuts:
        lost = cut.end_offset - cut.first_offset
        what = (f"offsets {cut.first_offset}-{cut.end_offset - 1} ({lost} record{'s' if lost != 1 else ''})"
                if lost else "a torn tail (never acknowledged)")
        click.echo(f"quarantined {cut.length} bytes of {cut.segment} at byte {cut.position}: {what}: {cut.reason}"
                   f" -> {cut.quarantine_file}")
    frames, findings = verify_log(log_dir)
    corrupt = [f for f in findings if f.kind == "corrupt"]
    for f in corrupt:
        click.echo(f"still corrupt: {f.segment} byte {f.position} (offset {f.offset}): {f.reason}")
    lost = sum(c.end_offset - c.first_offset for c in cuts)
    click.echo(f"{len(cuts)} stretch{'es' if len(cuts) != 1 else ''} quarantined, {lost} record"
               f"{'s' if lost != 1 else ''} lost; {frames} valid frames; {len(corrupt)} corrupt")
    sys.exit(1 if corrupt else 0)
