"""Cascade of N equal well-mixed tanks in series carrying a decaying tracer.

Only :mod:`processtwin.model` is imported here: the equations are backend-free and are
evaluated by JAX, CasADi or Pyomo through the injected ``ops`` namespace.
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Model, Var, dimension, param, variables

__all__ = ["TankCascade", "TankCascadeInputs", "TankCascadeOutputs", "TankCascadePorts",
           "TankCascadeState"]

TankCascadeState = variables(
    "TankCascadeState",
    c=Var("g/m3", "tracer concentration in each tank", default=0.0, bounds=(0.0, None),
          shape="n_tanks"),
)

TankCascadeInputs = variables(
    "TankCascadeInputs",
    q=Var("m3/min", "volumetric flow through the cascade", default=0.5, bounds=(0.0, None),
          kind="manipulated"),
    c_in=Var("g/m3", "tracer concentration of the inlet stream", default=10.0,
             bounds=(0.0, None), kind="disturbance"),
)

TankCascadeOutputs = variables(
    "TankCascadeOutputs",
    c_out=Var("g/m3", "outlet concentration analyser", kind="online", noise=0.05),
    c_meas=Var("g/m3", "concentration probe in each tank", kind="online", noise=0.1,
               shape="n_tanks"),
)

TankCascadePorts = variables(
    "TankCascadePorts",
    outlet=Var("g/m3", "tracer concentration of the outlet stream", kind="port"),
    flow=Var("m3/min", "volumetric flow of the outlet stream", kind="port"),
)


class TankCascade(Model):
    r"""N well-mixed tanks in series with first-order tracer decay (time unit: minutes).

    Each of the ``n_tanks`` tanks holds the same volume :math:`V` [m3]; a flow :math:`q`
    [m3/min] passes through all of them, so tank :math:`i` is fed by tank :math:`i-1` and
    the first by the inlet, of concentration :math:`c_{in}` [g/m3]. The tracer decays with
    first-order rate constant :math:`k` [1/min] (a radioactive or reactive tracer; ``k=0``
    for a conservative one):

    .. math::

        \dot c_i = \frac{q}{V}\,(c_{i-1} - c_i) - k\,c_i, \qquad c_0 \equiv c_{in},
        \qquad i = 1 \dots N.

    This is the tanks-in-series model of non-ideal flow of Levenspiel (1999), *Chemical
    Reaction Engineering*, 3rd ed., Wiley, ch. 14: for ``k=0`` the response to a step in
    :math:`c_{in}` is the Erlang (gamma) distribution of N stages with mean residence time
    :math:`N V / q`, and with decay the steady-state outlet is
    :math:`c_{in} / (1 + k V/q)^N` (N first-order stirred tanks in series, Levenspiel
    ch. 6).

    Measured online: the outlet concentration (last tank) and a probe in every tank.
    Ports: the outlet stream's concentration and flow, so a cascade can feed another one
    (two cascades of N1 and N2 tanks in series are one cascade of N1 + N2 tanks).

    Default parameters are illustrative, not fitted to a plant: 2 m3 tanks at 0.5 m3/min
    (4 min residence time per tank) and a slow decay, 0.01 1/min (a few per cent lost per
    tank); set ``k=0`` for a conservative tracer.
    """

    V: float = param(2.0, units="m3", bounds=(0.0, None), strict=True,
                     doc="volume of each tank")
    k: float = param(0.01, units="1/min", bounds=(0.0, None),
                     doc="first-order decay rate constant of the tracer")
    n_tanks: int = dimension(3, doc="number of tanks in series")

    name: ClassVar[str] = "tank_cascade"
    State: ClassVar[type] = TankCascadeState
    Inputs: ClassVar[type] = TankCascadeInputs
    Outputs: ClassVar[type] = TankCascadeOutputs
    Ports: ClassVar[type] = TankCascadePorts
    time_unit: ClassVar[str] = "min"

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the tank concentrations [g/(m3 min)]."""
        upstream = ops.shift(x.c, 1, u.c_in)  # tank i-1 feeds tank i; the inlet feeds tank 1
        return TankCascadeState(c=u.q / self.V * (upstream - x.c) - self.k * x.c)

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Outlet analyser and the probe in every tank [g/m3]."""
        return TankCascadeOutputs(c_out=ops.index(x.c, -1), c_meas=x.c)

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """The outlet stream: the last tank's concentration [g/m3] at the flow q [m3/min]."""
        return TankCascadePorts(outlet=ops.index(x.c, -1), flow=u.q)
