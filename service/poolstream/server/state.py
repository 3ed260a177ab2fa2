"""What the handlers share: the serving core (config, plugin selection, engine, call count).

``ServerState`` is the name the server and its tests have always used for it.
"""

from __future__ import annotations

from poolstream.serving.core import ServingCore

ServerState = ServingCore

__all__ = ["ServerState"]
