"""``adaptd status`` as tables: the daemon's ``/v1/health`` and ``/v1/stats`` answers
rendered for a person (pure: answers in, rich renderables out).

The stats are a tree whose groups vary with the setup (processors off with Kafka, alerts
off without sinks, counters added over time), so the layout follows the shape, not a
fixed list: top-level figures in one table, each group in its own, a group of like
entities (tenants, processors, alert sinks) as a matrix.
"""

from __future__ import annotations

from typing import Any

from adaptd.daemon.cli.tables import table

#: What a group that is null in the stats means, instead of "None".
_OFF = {
    "alerts": "off (no [alerts] sinks configured)",
    "processors": "off (run by `adaptd worker` on Kafka)",
}
#: Top-level figures shown in the heading line instead of the table.
_HEADING = ("ready", "uptime_s")
#: A matrix with more fields than this is shown one entity per column (figures as rows).
_WIDE = 8


def cell(value: Any) -> str:
    """One value as a short string: ``-`` for None / empty, ``yes`` / ``no``, ``k=v k=v`` for
    a mapping (nested ones inline), ``a, b`` for a list."""
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    return str(value)


def heading(url: str, health: dict[str, Any], stats: dict[str, Any]) -> str:
    """``adaptd VERSION at URL: STATUS, ready, up 12.3 s`` (parts the answers lack left out)."""
    parts = [f"adaptd {health.get('version', '?')} at {url}: {health.get('status', '?')}"]
    if "ready" in stats:
        parts.append("ready" if stats["ready"] else "NOT ready")
    if isinstance(stats.get("uptime_s"), (int, float)):
        parts.append(f"up {stats['uptime_s']:.1f} s")
    return ", ".join(parts)


def _is_entities(value: Any) -> bool:
    """A non-empty mapping (or list) whose every member is a mapping: tenants, processors, sinks."""
    members = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
    return bool(members) and all(isinstance(m, dict) for m in members)


def _matrix(title: str, entities: dict[str, dict[str, Any]]) -> Any:
    """Entities as rows and their fields as columns, or transposed when there are many fields."""
    fields: list[str] = []
    for figures in entities.values():
        fields += [f for f in figures if f not in fields]
    # a field that only repeats the row's label (a sink's name) is left out
    fields = [f for f in fields if any(cell(figures.get(f)) != name for name, figures in entities.items())]
    if len(fields) > _WIDE:
        names = list(entities)
        return table(title, ["figure", *names], [[f, *(cell(entities[n].get(f)) for n in names)] for f in fields],
                     right=set(names))
    return table(title, ["", *fields], [[name, *(cell(figures.get(f)) for f in fields)]
                                       for name, figures in entities.items()], right=set(fields))


def _entities(value: Any) -> dict[str, dict[str, Any]]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return {str(m.get("name") or m.get("sink") or i): m for i, m in enumerate(value, 1)}


def _group(title: str, group: dict[str, Any], out: list[Any]) -> None:
    """Append ``group``'s figures as a table, then each of its entity sets as a matrix."""
    rows = [[k, cell(v)] for k, v in group.items() if not _is_entities(v)]
    if rows:
        out.append(table(title, ["figure", "value"], rows, right={"value"}))
    for key, value in group.items():
        if _is_entities(value):
            out.append(_matrix(f"{title}.{key}", _entities(value)))


def status_view(url: str, health: dict[str, Any], stats: dict[str, Any]) -> list[Any]:
    """The heading line, then the top-level figures and one table per group of the stats.

    A group that is null shows what that means (``alerts``: off) in the first table; an
    empty ``stats`` gives the heading and an empty figures table.
    """
    top, groups = [], []
    for key, value in stats.items():
        if key in _HEADING:
            continue
        if value is None and key in _OFF:
            top.append([key, _OFF[key]])
        elif (isinstance(value, dict) and value) or _is_entities(value):
            groups.append((key, value))
        else:
            top.append([key, cell(value)])
    out: list[Any] = [heading(url, health, stats), table("daemon", ["figure", "value"], top, right={"value"})]
    for key, value in groups:
        if _is_entities(value):
            out.append(_matrix(key, _entities(value)))
        else:
            _group(key, value, out)
    return out
