"""One dashboard screen per module; ``SCREENS`` maps each mode name to its class."""

from __future__ import annotations

from adaptd.tui.screens.adaptations import AdaptationsScreen
from adaptd.tui.screens.optimizer import OptimizerScreen
from adaptd.tui.screens.overview import OverviewScreen
from adaptd.tui.screens.routes import RoutesScreen
from adaptd.tui.screens.signals import SignalsScreen
from adaptd.tui.screens.tail import TailScreen

#: Mode name -> screen class, in the order of the number keys 1..6.
SCREENS = {
    "overview": OverviewScreen,
    "routes": RoutesScreen,
    "signals": SignalsScreen,
    "adaptations": AdaptationsScreen,
    "optimizer": OptimizerScreen,
    "tail": TailScreen,
}
