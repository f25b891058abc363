"""One dashboard screen per module; ``SCREENS`` maps each mode name to its class."""

from __future__ import annotations

from .adaptations import AdaptationsScreen
from .optimizer import OptimizerScreen
from .overview import OverviewScreen
from .routes import RoutesScreen
from .signals import SignalsScreen
from .tail import TailScreen

#: Mode name -> screen class, in the order of the number keys 1..6.
SCREENS = {
    "overview": OverviewScreen,
    "routes": RoutesScreen,
    "signals": SignalsScreen,
    "adaptations": AdaptationsScreen,
    "optimizer": OptimizerScreen,
    "tail": TailScreen,
}
