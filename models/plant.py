"""The fed-batch plant: a feed vessel supplying a bioreactor, composed by ports.

Only :mod:`processtwin.model` and :mod:`processtwin.system` are imported here (the
composition is structure, not equations).
"""

from __future__ import annotations

from processtwin.system import System

from .bioreactor import Bioreactor
from .feed_vessel import FeedVessel

__all__ = ["fed_batch_plant"]


def fed_batch_plant(feed: FeedVessel | None = None, reactor: Bioreactor | None = None
                    ) -> System:
    """Feed vessel → bioreactor, as one system named ``"fed_batch_plant"``.

    The vessel's delivered flow drives the reactor's feed rate and its substrate
    concentration the reactor's feed concentration, so the one free input is the pump
    setpoint ``feed.F`` [L/h]; the states are ``feed.V`` [L] and ``reactor.X``,
    ``reactor.S``, ``reactor.P`` [g/L], ``reactor.V`` [L] (time unit: hours). The units'
    equations and default parameters are :class:`~processtwin.models.FeedVessel`'s and
    :class:`~processtwin.models.Bioreactor`'s (Srinivasan, Palanki & Bonvin 2003).

    Parameters
    ----------
    feed : FeedVessel, optional
        The feed vessel (default parameters if omitted).
    reactor : Bioreactor, optional
        The bioreactor (default parameters if omitted).

    Returns
    -------
    System
        The composed plant; its variables are addressed as ``"unit.var"``.
    """
    return System(
        {"feed": FeedVessel() if feed is None else feed,
         "reactor": Bioreactor() if reactor is None else reactor},
        [("feed.outflow", "reactor.F"), ("feed.S_out", "reactor.S_in")],
        name="fed_batch_plant",
    )

