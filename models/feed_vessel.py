"""Substrate feed vessel with a metering pump: the supply of a fed-batch bioreactor.

Only :mod:`processtwin.model` is imported here (backend-free equations).
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Model, Var, param, variables

__all__ = ["FeedVessel", "FeedVesselInputs", "FeedVesselOutputs", "FeedVesselPorts",
           "FeedVesselState"]

FeedVesselState = variables(
    "FeedVesselState",
    V=Var("L", "volume of feed solution in the vessel", default=50.0, bounds=(0.0, None)),
)

FeedVesselInputs = variables(
    "FeedVesselInputs",
    F=Var("L/h", "pump flow setpoint", default=0.0, bounds=(0.0, None), kind="manipulated"),
)

FeedVesselOutputs = variables(
    "FeedVesselOutputs",
    V=Var("L", "feed volume from the vessel's load cell", kind="online", noise=0.1),
)

FeedVesselPorts = variables(
    "FeedVesselPorts",
    outflow=Var("L/h", "flow of feed solution delivered by the pump", kind="port"),
    S_out=Var("g/L", "substrate concentration of the delivered stream", kind="port"),
)


class FeedVessel(Model):
    r"""Feed vessel drained by a metering pump (time unit: hours).

    The pump delivers its setpoint :math:`F` [L/h] while the vessel holds liquid and
    stops smoothly as it runs dry:

    .. math::

        F_{out} = F \tanh(V / V_{low}), \qquad \dot V = -F_{out},

    so the volume :math:`V` [L] approaches zero but never crosses it (near empty,
    :math:`\dot V \approx -F V / V_{low}`), while above :math:`20 V_{low}` (10 L by default)
    the delivered flow equals the setpoint to machine precision
    (:math:`1 - \tanh 20 < 10^{-17}`). A
    smooth factor rather than a switch keeps the equations differentiable for the
    optimisers, as in the smoothed complementarity formulations of Biegler (2010),
    *Nonlinear Programming*, SIAM, ch. 11. The stream carries the feed's substrate
    concentration :math:`S_{feed}` [g/L], a parameter: a well-mixed solution prepared
    before the batch.

    Ports: ``outflow`` [L/h] and ``S_out`` [g/L], which drive a bioreactor's ``F`` and
    ``S_in``. Measured online: the vessel's volume (load cell).

    Default parameters: a 200 g/L glucose feed, the feed concentration of the penicillin
    fed-batch benchmark (Srinivasan, Palanki & Bonvin 2003, *Comput. Chem. Eng.* 27, 1–26)
    that :class:`~processtwin.models.Bioreactor` reproduces; a 50 L vessel holds enough for
    that batch, and the pump stops over the last half litre.
    """

    S_feed: float = param(200.0, units="g/L", bounds=(0.0, None),
                          doc="substrate concentration of the feed solution")
    V_low: float = param(0.5, units="L", bounds=(0.0, None), strict=True,
                         doc="volume over which the pump stops as the vessel runs dry")

    name: ClassVar[str] = "feed_vessel"
    State: ClassVar[type] = FeedVesselState
    Inputs: ClassVar[type] = FeedVesselInputs
    Outputs: ClassVar[type] = FeedVesselOutputs
    Ports: ClassVar[type] = FeedVesselPorts
    time_unit: ClassVar[str] = "h"

    def delivered(self, x: Any, u: Any, ops: Any) -> Any:
        """Flow delivered by the pump, ``F tanh(V / V_low)`` [L/h]."""
        # tanh(y) = 2 / (1 + exp(-2y)) - 1, written with exp because Pyomo's symbolic
        # differentiation has no tanh; no overflow while V > -350 V_low.
        return u.F * (2.0 / (1.0 + ops.exp(-2.0 * x.V / self.V_low)) - 1.0)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the vessel's volume [L/h]."""
        return FeedVesselState(V=-self.delivered(x, u, ops))

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Load cell [L]."""
        return FeedVesselOutputs(V=x.V)

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """The delivered stream: flow [L/h] and substrate concentration [g/L]."""
        return FeedVesselPorts(outflow=self.delivered(x, u, ops), S_out=self.S_feed)
