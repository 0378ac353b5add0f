"""Double integrator: the linear reference model of estimation and control texts.

Only :mod:`processtwin.model` is imported here (backend-free equations).
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Model, Var, variables

__all__ = ["DoubleIntegrator"]

DoubleIntegratorState = variables(
    "DoubleIntegratorState",
    p=Var("m", "position"),
    v=Var("m/s", "velocity"),
)
DoubleIntegratorInputs = variables(
    "DoubleIntegratorInputs",
    a=Var("m/s2", "acceleration", kind="manipulated"),
)
DoubleIntegratorOutputs = variables(
    "DoubleIntegratorOutputs",
    p=Var("m", "position sensor", kind="online", noise=0.5),
    v=Var("m/s", "velocity sensor", kind="online", noise=0.2),
)


class DoubleIntegrator(Model):
    """Double integrator ṗ = v, v̇ = a (time unit: s).

    The linear benchmark of Bar-Shalom, Li & Kirubarajan (2001), *Estimation with
    Applications to Tracking and Navigation*, ch. 6, and Bryson & Ho (1975), *Applied Optimal
    Control*, ch. 5. Its exact discretisation under a held input is polynomial, so RK4 and
    Radau collocation reproduce it exactly: the tests use it to compare the EKF/UKF with the
    Kalman filter and the optimiser with the Riccati solution.
    """

    name: ClassVar[str] = "double_integrator"
    State: ClassVar[type] = DoubleIntegratorState
    Inputs: ClassVar[type] = DoubleIntegratorInputs
    Outputs: ClassVar[type] = DoubleIntegratorOutputs
    time_unit: ClassVar[str] = "s"

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the state [m/s, m/s²]."""
        return DoubleIntegratorState(p=x.v, v=u.a)

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Position and velocity sensors."""
        return DoubleIntegratorOutputs(p=x.p, v=x.v)
