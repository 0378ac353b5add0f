"""Fed-batch bioreactor: Haldane growth, Luedeking–Piret product formation, maintenance.

Only :mod:`processtwin.model` is imported here: the equations are backend-free and are
evaluated by JAX, CasADi or Pyomo through the injected ``ops`` namespace.
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Limit, Model, Objective, Var, param, variables

__all__ = ["Bioreactor", "BioreactorInputs", "BioreactorOutputs", "BioreactorState"]

BioreactorState = variables(
    "BioreactorState",
    X=Var("g/L", "biomass concentration", default=1.0, bounds=(0.0, None)),
    S=Var("g/L", "substrate concentration", default=0.5, bounds=(0.0, None)),
    P=Var("g/L", "product concentration", default=0.0, bounds=(0.0, None)),
    V=Var("L", "broth volume", default=120.0, bounds=(0.0, None), strict=True),
)

BioreactorInputs = variables(
    "BioreactorInputs",
    F=Var("L/h", "feed flow rate", default=0.0, bounds=(0.0, None), kind="manipulated"),
    S_in=Var("g/L", "substrate concentration in the feed", default=200.0,
             bounds=(0.0, None), kind="disturbance"),
)

BioreactorOutputs = variables(
    "BioreactorOutputs",
    V=Var("L", "broth volume from the load cell", kind="online", noise=0.05),
    OUR=Var("g/(L h)", "oxygen uptake rate from off-gas analysis", kind="online",
            noise=0.002),
    X=Var("g/L", "biomass, lab assay (dry weight)", kind="offline", noise=0.05),
    S=Var("g/L", "substrate, lab assay (HPLC)", kind="offline", noise=0.02),
    P=Var("g/L", "product, lab assay (HPLC)", kind="offline", noise=0.02),
)


class Bioreactor(Model):
    r"""Fed-batch bioreactor with substrate-inhibited growth (time unit: hours).

    Balances for biomass :math:`X`, substrate :math:`S`, product :math:`P` [g/L] and
    broth volume :math:`V` [L] under a feed :math:`F` [L/h] of substrate concentration
    :math:`S_{in}` [g/L]:

    .. math::

        \mu &= \mu_{max} S / (K_s + S + S^2/K_i)          && \text{Haldane (Andrews 1968)} \\
        \varphi &= S / (K_p + S)                         && \text{substrate availability} \\
        q_p &= \alpha\mu + \beta\varphi                  && \text{Luedeking–Piret (1959)} \\
        \sigma &= \mu/Y_{xs} + q_p/Y_{ps} + m_s\varphi   && \text{substrate uptake} \\
        \dot X &= (\mu - F/V) X \\
        \dot S &= -\sigma X + F/V (S_{in} - S) \\
        \dot P &= q_p X - F/V\,P \\
        \dot V &= F

    Measured: broth volume (load cell) and oxygen uptake rate
    :math:`OUR = (\mu/Y_{xo} + m_o) X` [g O2/(L h)] online; biomass, substrate and product
    from offline lab assays.

    Default parameters are the penicillin fed-batch of Bajpai & Reuss (1980),
    *J. Chem. Technol. Biotechnol.* 30, 332–344, in the reduced form used as a benchmark by
    Srinivasan, Palanki & Bonvin (2003), *Comput. Chem. Eng.* 27, 1–26 (μmax 0.02 1/h,
    Ks 0.05 g/L, Ki 5 g/L, β 0.004 1/h, Yxs 0.5, Yps 1.2, Sin 200 g/L; initial X 1 g/L,
    S 0.5 g/L, V 120 L), which is also do-mpc's ``batch_reactor`` example. The saturation
    constant of non-growth production, Kp = 2e-4 g/L, is Bajpai & Reuss's (also in the
    PenSim benchmark, Birol, Ündey & Çinar 2002, *Comput. Chem. Eng.* 26, 1553–1565); it
    keeps S ≥ 0 when the feed stops (set ``K_p=0`` for the exact reduced form). Oxygen
    yield and maintenance are typical aerobic values, not fitted to this strain.

    With ``m_s = 0`` the substrate balance conserves
    :math:`V (X/Y_{xs} + S + P/Y_{ps}) - S_{in} V` for constant :math:`S_{in}`.
    """

    mu_max: float = param(0.02, units="1/h", bounds=(0.0, None), doc="maximum specific growth rate")
    K_s: float = param(0.05, units="g/L", bounds=(0.0, None), doc="substrate saturation constant")
    K_i: float = param(5.0, units="g/L", bounds=(0.0, None), strict=True,
                       doc="substrate inhibition constant")
    alpha: float = param(0.0, units="g/g", bounds=(0.0, None),
                         doc="growth-associated product yield (Luedeking–Piret)")
    beta: float = param(0.004, units="g/(g h)", bounds=(0.0, None),
                        doc="non-growth specific production rate (Luedeking–Piret)")
    K_p: float = param(2e-4, units="g/L", bounds=(0.0, None),
                       doc="substrate saturation of non-growth production and maintenance")
    Y_xs: float = param(0.5, units="g/g", bounds=(0.0, None), strict=True,
                        doc="biomass yield on substrate")
    Y_ps: float = param(1.2, units="g/g", bounds=(0.0, None), strict=True,
                        doc="product yield on substrate")
    m_s: float = param(0.0, units="g/(g h)", bounds=(0.0, None),
                       doc="maintenance substrate consumption")
    Y_xo: float = param(1.0, units="g/g", bounds=(0.0, None), strict=True,
                        doc="biomass yield on oxygen")
    m_o: float = param(0.005, units="g/(g h)", bounds=(0.0, None),
                       doc="maintenance oxygen consumption")
    OTR_max: float = param(0.3, units="g/(L h)", bounds=(0.0, None),
                           doc="maximum oxygen transfer rate of the vessel, kLa (C* - C_crit)")

    name: ClassVar[str] = "bioreactor"
    State: ClassVar[type] = BioreactorState
    Inputs: ClassVar[type] = BioreactorInputs
    Outputs: ClassVar[type] = BioreactorOutputs
    time_unit: ClassVar[str] = "h"
    #: Batch outcomes to maximise: the final product concentration (Srinivasan et al. 2003,
    #: do-mpc's ``batch_reactor``), the final product mass, and the product mass per batch
    #: hour (with a free batch length); feed moves penalised by 1 (L/h)⁻² (singular arc).
    objectives: ClassVar[dict] = {
        "product": Objective("final product concentration P(T)", "g/L",
                             terminal=lambda m, x, T, ops: x.P, du_weight=1.0),
        "product_mass": Objective("final product mass P(T) V(T)", "g",
                                  terminal=lambda m, x, T, ops: x.P * x.V / 1000.0,
                                  du_weight=1.0),
        "productivity": Objective("product mass per batch hour P(T) V(T) / T", "g/h",
                                  terminal=lambda m, x, T, ops: x.P * x.V / 1000.0 / T,
                                  free_time=True, du_weight=1.0),
    }
    #: The operating envelope of the benchmark (do-mpc's ``batch_reactor``): feed pump
    #: 0–0.2 L/h, biomass ≤ 3.7 g/L (broth viscosity), oxygen uptake within the vessel's
    #: transfer capacity.
    limits: ClassVar[dict] = {
        "F": Limit(0.0, 0.2, "feed pump capacity"),
        "X": Limit(None, 3.7, "broth viscosity / oxygen transfer"),
        "OUR": Limit(None, "OTR_max", "vessel oxygen transfer capacity"),
    }

    def growth_rate(self, S: Any) -> Any:
        """Haldane specific growth rate μ(S) [1/h]."""
        return self.mu_max * S / (self.K_s + S + S**2 / self.K_i)

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the state [state units per h]."""
        mu = self.growth_rate(x.S)
        phi = x.S / (self.K_p + x.S)
        qp = self.alpha * mu + self.beta * phi
        sigma = mu / self.Y_xs + qp / self.Y_ps + self.m_s * phi
        dilution = u.F / x.V
        return BioreactorState(
            X=(mu - dilution) * x.X,
            S=-sigma * x.X + dilution * (u.S_in - x.S),
            P=qp * x.X - dilution * x.P,
            V=u.F,
        )

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Measured outputs: volume, oxygen uptake rate and lab assays."""
        mu = self.growth_rate(x.S)
        our = (mu / self.Y_xo + self.m_o) * x.X
        return BioreactorOutputs(V=x.V, OUR=our, X=x.X, S=x.S, P=x.P)
