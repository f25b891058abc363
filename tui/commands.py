"""Command palette provider: every screen and action by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

#: (title, help, app action) offered in the palette.
COMMANDS = (
    ("Go to overview", "events/s, success, latency, cost, incidents", "app.switch_mode('overview')"),
    ("Go to routes", "programs and routes; pin / unpin; history", "app.switch_mode('routes')"),
    ("Go to signals", "anomalies and drift; acknowledge", "app.switch_mode('signals')"),
    ("Go to adaptations", "timeline of decisions; revert", "app.switch_mode('adaptations')"),
    ("Go to optimizer", "jobs, runs, metric against cost", "app.switch_mode('optimizer')"),
    ("Go to live tail", "filterable event stream", "app.switch_mode('tail')"),
    ("Refresh now", "fetch everything from the daemon again", "app.refresh_now"),
    ("Pin selected route", "routes screen", "screen.pin"),
    ("Unpin selected route's program", "routes screen", "screen.unpin"),
    ("Acknowledge selected signal", "signals screen", "screen.ack"),
    ("Revert selected adaptation", "adaptations screen", "screen.revert"),
    ("Start optimization", "optimizer screen", "screen.optimize"),
    ("Help", "keys and what they do", "app.help"),
)


class DashCommands(Provider):
    """Fuzzy-matches ``COMMANDS``; an action the current screen lacks is not offered."""

    def _available(self):
        screen = self.screen  # the screen the palette was opened over
        for title, help_text, action in COMMANDS:
            if action.startswith("screen.") and not hasattr(screen, f"action_{action.split('.', 1)[1]}"):
                continue
            yield title, help_text, action

    async def discover(self) -> Hits:
        for title, help_text, action in self._available():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._available():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.run_action, action), help=help_text)
