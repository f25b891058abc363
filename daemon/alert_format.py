"""How a signal reads in each service: Slack message, PagerDuty event, Apprise title/body.

Pure functions of the signal event (a dict as the processors write it, see
``adaptd.streams.events.Signal``).  They never raise on a signal missing optional
fields: what is absent is left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

#: Limits of the services (Slack Block Kit; PagerDuty payload.summary).
_SLACK_HEADER_MAX = 150
_SLACK_TEXT_MAX = 3000
_PD_SUMMARY_MAX = 1024

_STATE_WORD = {"open": "opened", "update": "updated", "resolved": "resolved"}


def _where(event: Mapping[str, Any]) -> str:
    """``program / module / route / model``: the key the signal is about (what is set)."""
    parts = [str(event[k]) for k in ("program", "module", "route", "model") if event.get(k)]
    return " / ".join(parts) or "?"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _evidence(event: Mapping[str, Any]) -> str:
    """``observed 0.3, expected 0–0.05`` from the explanation, or "" when it has neither."""
    why = event.get("explanation")
    if not isinstance(why, Mapping):
        return ""
    out = []
    if "observed" in why:
        out.append(f"observed {_number(why['observed'])}")
    expected = why.get("expected")
    if isinstance(expected, (list, tuple)) and len(expected) == 2:
        out.append(f"expected {_number(expected[0])}–{_number(expected[1])}")
    if not out and why.get("reason"):
        out.append(str(why["reason"]))
    return ", ".join(out)


def summary(event: Mapping[str, Any]) -> str:
    """One line: ``adaptd anomaly opened: error_rate on qa / a (critical); observed 0.3, expected 0–0.05``."""
    state = str(event.get("state", "open"))
    head = (f"adaptd {event.get('signal_type', 'signal')} {_STATE_WORD.get(state, state)}: "
            f"{event.get('metric') or '?'} on {_where(event)}")
    if state != "resolved" and event.get("severity"):
        head += f" ({event['severity']})"
    evidence = _evidence(event)
    return f"{head}; {evidence}" if evidence else head


def _slack_escape(text: str) -> str:
    # Slack mrkdwn: these three are control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(event: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (notifications, fallback) and ``blocks``.

    Blocks: a header, the fields the signal has (program, route, metric, severity, score,
    ...), the explanation as a code block (cut to Slack's 3000 characters), and the ids.
    """
    text = summary(event)
    state = str(event.get("state", "open"))
    emoji = {"resolved": ":white_check_mark:", "critical": ":rotating_light:"}.get(
        state if state == "resolved" else str(event.get("severity")), ":warning:")
    header = f"{_STATE_WORD.get(state, state).capitalize()}: {event.get('metric') or event.get('signal_type')}"
    fields = [
        {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(_number(event[key]))}"}
        for label, key in (("Program", "program"), ("Module", "module"), ("Route", "route"), ("Model", "model"),
                           ("Metric", "metric"), ("Severity", "severity"), ("Score", "score"),
                           ("Window end", "window_end"))
        if event.get(key) is not None
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:_SLACK_HEADER_MAX]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} {_slack_escape(text)}"[:_SLACK_TEXT_MAX]}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})  # Slack takes at most 10
    if event.get("explanation"):
        why = orjson.dumps(event["explanation"], option=orjson.OPT_INDENT_2).decode()
        code = _slack_escape(why)[:_SLACK_TEXT_MAX - 8]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{code}```"}})
    ids = f"incident `{event.get('incident_id') or '-'}` · signal `{event.get('id')}` · {event.get('ts')}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(ids)}]})
    return {"text": text, "blocks": blocks}


def pagerduty_event(event: Mapping[str, Any], routing_key: str, severity: Mapping[Any, str],
                    source: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event for a signal.

    ``resolved`` -> ``resolve``; ``open`` and ``update`` -> ``trigger`` (a second trigger
    with the same key updates the open alert).  ``dedup_key`` is the incident id, so the
    resolve closes what the open raised (the signal id when a signal has no incident).
    ``severity`` maps adaptd's severity to PagerDuty's (unknown: ``warning``).
    """
    dedup_key = str(event.get("incident_id") or event.get("id"))
    if event.get("state") == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    details = {k: event[k] for k in ("program", "module", "route", "model", "metric", "score", "severity",
                                     "state", "window_start", "window_end", "tenant", "id", "incident_id",
                                     "explanation") if event.get(k) is not None}
    payload: dict[str, Any] = {
        "summary": summary(event)[:_PD_SUMMARY_MAX],
        "source": source,
        "severity": severity.get(str(event.get("severity")), "warning"),
        "component": str(event.get("program") or "?"),
        "class": f"{event.get('signal_type', 'signal')}/{event.get('metric') or '?'}",
        "custom_details": details,
    }
    if event.get("ts"):
        payload["timestamp"] = str(event["ts"])
    if event.get("route"):
        payload["group"] = str(event["route"])
    return {"routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key,
            "client": "adaptd", "payload": payload}


def apprise_message(event: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(title, body, notify_type)`` for Apprise; the type is one of Apprise's
    ``success`` (resolved), ``failure`` (critical), ``warning``, ``info``."""
    state = str(event.get("state", "open"))
    kind = "success" if state == "resolved" else {"critical": "failure", "warning": "warning"}.get(
        str(event.get("severity")), "info")
    title = f"adaptd {event.get('signal_type', 'signal')} {_STATE_WORD.get(state, state)}: {event.get('metric') or '?'}"
    lines = [summary(event)]
    lines += [f"{k}: {_number(event[k])}" for k in ("program", "module", "route", "model", "score", "window_end")
              if event.get(k) is not None]
    lines.append(f"incident: {event.get('incident_id') or '-'}  signal: {event.get('id')}  at {event.get('ts')}")
    return title, "\n".join(lines), kind


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/\s?#'\"]+)[^\s'\"]*")


def redact_url(text: str, *, keep_host: bool = True) -> str:
    """``text`` with every URL cut to ``scheme://host/…`` (credentials, path and query gone),
    or to ``scheme://…`` with ``keep_host=False`` (Apprise URLs hold tokens in the host part).

    Webhook URLs often carry their secret in the path or query (Slack, Discord), and
    error messages repeat the URL.  Text without a URL comes back unchanged.
    """
    def cut(match: re.Match[str]) -> str:
        if not keep_host:
            return f"{match.group(1)}://…"
        host = match.group(2).rpartition("@")[2]  # user:password@ goes too
        return f"{match.group(1)}://{host}/…"

    return _URL.sub(cut, text)
