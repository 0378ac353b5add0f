"""Multi-zone building of ISO 13790 5R1C zones: air, surface and mass nodes per zone
(time unit: s).

A drop-in for :class:`~models.building.Building`: the same zone settings, inputs, outputs
and ports (:class:`~models.building.AbstractBuilding`), another network per zone.

Only :mod:`processtwin.model` is imported here (backend-free equations).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from processtwin.model import SCALARS, ModelError, Var, param, variables

from .building import AbstractBuilding, BuildingOutputs, BuildingPorts

__all__ = ["MASS_CLASSES", "Building5R1C"]

#: ISO 13790:2008, Table 12: construction class → (A_m / A_f [-], C_m / A_f [J/(m2 K)]).
MASS_CLASSES: Mapping[str, tuple[float, float]] = MappingProxyType({
    "very light": (2.5, 80e3),
    "light": (2.5, 110e3),
    "medium": (2.5, 165e3),
    "heavy": (3.0, 260e3),
    "very heavy": (3.5, 370e3),
})

Building5R1CState = variables(
    "Building5R1CState",
    T_i=Var("degC", "indoor air node (air and furnishings) of each zone", default=20.0,
            shape="n_zones"),
    T_m=Var("degC", "thermal mass node of each zone (ISO 13790 θ_m)", default=19.0,
            shape="n_zones"),
)


class Building5R1C(AbstractBuilding):
    r"""Multi-zone building: ISO 13790 5R1C zones (air, surface, mass) coupled by walls.

    ``n_zones`` zones, each the five-resistance, one-capacitance network of the simple
    hourly method of ISO 13790 (2008), *Energy performance of buildings — Calculation of
    energy use for space heating and cooling* (§7.2.2, §12.2.2 and Annex C), here in
    continuous time (time unit: s). A drop-in for :class:`~models.building.Building`: the
    same settings, inputs (``Q_hvac``, ``T_out``, ``T_ground``, ``I_sol``, ``occupancy``),
    output and port (``T_air``).

    Zone :math:`i` (floor area :math:`A_f`, windows :math:`A_w`, ground contact
    :math:`A_g`) has an air node :math:`\theta_{air}` (state ``T_i``), a surface node
    :math:`\theta_s` (algebraic: massless) and a mass node :math:`\theta_m` (state
    ``T_m``):

    .. math::

        C_a \dot\theta_{air} &= H_{ve}(\theta_{out} - \theta_{air})
            + H_{tr,is}(\theta_s - \theta_{air})
            + \sum_j H_{ij}(\theta_{air,j} - \theta_{air}) + \Phi_{ia} + Q_{hvac}, \\
        C_m \dot\theta_m &= H_{tr,ms}(\theta_s - \theta_m)
            + H_{em,out}(\theta_{out} - \theta_m) + H_{em,g}(\theta_{ground} - \theta_m)
            + \Phi_m, \\
        0 &= H_{tr,is}(\theta_{air} - \theta_s) + H_{tr,w}(\theta_{out} - \theta_s)
            + H_{tr,ms}(\theta_m - \theta_s) + \Phi_{st}
        \;\Rightarrow\; \theta_s = \frac{H_{tr,is}\theta_{air} + H_{tr,w}\theta_{out}
            + H_{tr,ms}\theta_m + \Phi_{st}}{H_{tr,is} + H_{tr,w} + H_{tr,ms}}.

    Conductances [W/K] (ISO 13790:2008): air–surface :math:`H_{tr,is} = h_{is} A_t`,
    :math:`A_t = \Lambda_{at} A_f` (§7.2.2.2: 3.45 W/(m2 K), 4.5); surface–mass
    :math:`H_{tr,ms} = h_{ms} A_m`, :math:`A_m = \Lambda_m A_f` (§12.2.2: 9.1 W/(m2 K);
    Table 12); windows :math:`H_{tr,w} = U_{win} A_w` (outdoor to the surface node);
    ventilation and infiltration :math:`H_{ve} = \rho_a c_a\,n\,h\,A_f / 3600` (outdoor
    air supplied to the air node; heat recovery :math:`\eta` is :math:`n(1-\eta)`); opaque
    envelope :math:`H_{op} = h_{op} A_f` and slab :math:`H_g = U_g A_g` to the mass node
    through :math:`1/H_{tr,em} = 1/H_{tr,op} - 1/H_{tr,ms}` with
    :math:`H_{tr,op} = H_{op} + H_g`, split in proportion,
    :math:`H_{em,x} = H_x H_{tr,ms} / (H_{tr,ms} - H_{op} - H_g)` — the same as ISO's one
    external node at the conductance-weighted temperature
    :math:`(H_{op}\theta_{out} + H_g\theta_{ground}) / H_{tr,op}`, and like
    :class:`~models.building.Building`, whose slab also meets its envelope node. Internal
    walls :math:`H_{ij} = U_{int} A_{ij}` from the ``adjacency`` list
    :math:`(i, j, A_{ij})` join the air nodes, as in :class:`~models.building.Building`.

    Gains [W]: internal :math:`\Phi_{int} = A_f (q_{base} + q_{occ}\,\mathrm{occupancy})`
    and solar :math:`\Phi_{sol} = g A_w I_{sol}`, split as ISO 13790:2008 eqs. C.1–C.3:
    :math:`\Phi_{ia} = 0.5\,\Phi_{int}`, :math:`\Phi_m = (A_m/A_t)\,\Phi_r`,
    :math:`\Phi_{st} = (1 - A_m/A_t - H_{tr,w}/(h_{ms} A_t))\,\Phi_r` with
    :math:`\Phi_r = 0.5\,\Phi_{int} + \Phi_{sol}`; the rest,
    :math:`H_{tr,w}/(h_{ms} A_t)\,\Phi_r`, falls on the windows and leaves (the heat flow
    ``window_radiation``). The HVAC heat is convective, into the air node (as ISO's
    :math:`\Phi_{HC,nd}`).

    Capacities: :math:`C_m = c_m A_f` (Table 12) and :math:`C_a = c_a A_f`. ISO 13790 takes
    the air node massless, which makes the air temperature follow :math:`Q_{hvac}`
    instantly; here it holds the air and furnishings, so ``T_air`` is a state — a port
    without feedthrough (radiators whose heat depends on the room temperature close no
    algebraic loop, as in the district-heating twin) and the model stays an ODE. As
    :math:`c_a \to 0` it tends to the ISO network (tested against the hourly
    Crank–Nicolson method of Annex C). The network is linear: its steady state solves
    :math:`G\,T = q` over the air, surface and mass nodes.

    Settings as :class:`~models.building.AbstractBuilding`. Defaults (a medium-weight
    dwelling, 100 m2 per zone, as :class:`~models.building.Building`): mass class "medium",
    :math:`\Lambda_m = 2.5`, :math:`c_m` = 165 kJ/(m2 K) (Table 12; others by
    :meth:`of_mass_class`); air and furnishings 10 kJ/(m2 K) (air 3.3 kJ/(m2 K) at 2.7 m
    plus an assumed 6.7 kJ/(m2 K) of light furnishings); opaque envelope 0.6 W/(m2 K) of
    floor; windows U 1.3 W/(m2 K), g 0.6 (double low-e); 0.5 air changes per hour; slab
    0.3 W/(m2 K); internal walls 1.5 W/(m2 K); internal gains 2 W/m2 plus 6 W/m2 at full
    occupancy (ISO 17772-1 (2017), residential).
    """

    c_a: float = param(10e3, units="J/(m2 K)", bounds=(0.0, None), strict=True,
                       doc="air and furnishings heat capacity per m2 of floor")
    c_m: float = param(165e3, units="J/(m2 K)", bounds=(0.0, None), strict=True,
                       doc="internal heat capacity (mass node) per m2 of floor")
    a_m: float = param(2.5, units="-", bounds=(0.0, None), strict=True,
                       doc="effective mass area per m2 of floor (ISO Λ_m)")
    a_t: float = param(4.5, units="-", bounds=(0.0, None), strict=True,
                       doc="internal surface area per m2 of floor (ISO Λ_at)")
    h_is: float = param(3.45, units="W/(m2 K)", bounds=(0.0, None), strict=True,
                        doc="air–surface heat transfer coefficient")
    h_ms: float = param(9.1, units="W/(m2 K)", bounds=(0.0, None), strict=True,
                        doc="surface–mass heat transfer coefficient")
    h_op: float = param(0.6, units="W/(m2 K)", bounds=(0.0, None),
                        doc="opaque envelope conductance per m2 of floor")

    name: ClassVar[str] = "building_5r1c"
    State: ClassVar[type] = Building5R1CState

    def __check_init__(self) -> None:
        # equinox runs a subclass's check before its parents': the zones first, then what
        # the network needs of concrete values (traced or symbolic ones pass) — the opaque
        # paths in series with H_tr,ms (H_tr,em > 0), a share ≥ 0 of radiant gains at θ_s
        AbstractBuilding.__check_init__(self)
        values = (self.h_op, self.U_g, self.h_ms, self.a_m, self.a_t, self.U_win)
        if not all(type(v) in SCALARS for v in values):
            return
        a = self.areas()
        for z, (floor, window, ground) in enumerate(zip(a["floor"], a["window"], a["ground"],
                                                        strict=True)):
            h_ms = self.h_ms * self.a_m * floor
            h_tr_op = self.h_op * floor + self.U_g * ground
            if not h_tr_op < h_ms:
                raise ModelError(f"`{self.name}`: zone {z}: the opaque and ground "
                                 f"conductance {h_tr_op:g} W/K must be below H_tr,ms = "
                                 f"h_ms·a_m·A_f = {h_ms:g} W/K (ISO 13790 H_tr,em > 0).")
            share = 1.0 - self.a_m / self.a_t - self.U_win * window / (
                self.h_ms * self.a_t * floor)
            if not share >= 0.0:
                raise ModelError(f"`{self.name}`: zone {z}: the surface node would get a "
                                 f"negative share {share:g} of the radiant gains; `a_m` "
                                 f"must be below `a_t` and the windows "
                                 f"{window:g} m2 small enough (ISO 13790 eq. C.3).")

    @classmethod
    def of_mass_class(cls, mass_class: str, /, **kwargs: Any) -> Building5R1C:
        """The model with the mass area and capacity of an ISO 13790:2008 Table 12 class.

        Parameters
        ----------
        mass_class : str
            One of :data:`MASS_CLASSES`: ``"very light"``, ``"light"``, ``"medium"``,
            ``"heavy"``, ``"very heavy"``.
        **kwargs
            Other parameters and settings (``n_zones``, ``floor_area``, ...).

        Raises
        ------
        ModelError
            For an unknown class.
        """
        if mass_class not in MASS_CLASSES:
            raise ModelError(f"`{cls.name}`: unknown `mass_class` {mass_class!r}; expected "
                             f"one of {', '.join(map(repr, MASS_CLASSES))}.")
        a_m, c_m = MASS_CLASSES[mass_class]
        return cls(**{"a_m": a_m, "c_m": c_m, **kwargs})

    # ---- the network ----------------------------------------------------------------------
    def _conductances(self, ops: Any) -> dict[str, Any]:
        """Capacities [J/K] and conductances [W/K] of each zone (vectors over zones)."""
        a = self.areas()
        floor = self._vec(a["floor"], ops)
        window = self._vec(a["window"], ops)
        H_ms = self.h_ms * self.a_m * floor
        H_op = self.h_op * floor
        H_g = self.U_g * self._vec(a["ground"], ops)
        em = H_ms / (H_ms - H_op - H_g)  # 1/H_em = 1/H_tr,op - 1/H_tr,ms, split by H
        return {
            "floor": floor, "C_a": self.c_a * floor, "C_m": self.c_m * floor,
            "H_is": self.h_is * self.a_t * floor, "H_ms": H_ms, "H_w": self.U_win * window,
            "H_ve": self.rho_a * self.cp_a * self.n_ach / 3600.0 * self.height * floor,
            "H_em_out": H_op * em, "H_em_g": H_g * em, "solar": self.g * window,
        }

    def _gains(self, c: dict[str, Any], u: Any) -> dict[str, Any]:
        """Internal and solar gains and their split over the nodes [W] (ISO 13790:2008
        eqs. C.1–C.3)."""
        internal = c["floor"] * (self.q_base + self.q_occ * u.occupancy)
        solar = c["solar"] * u.I_sol
        radiant = 0.5 * internal + solar
        f_m = self.a_m / self.a_t
        f_w = c["H_w"] / (self.h_ms * self.a_t * c["floor"])
        return {"internal": internal, "solar": solar, "air": 0.5 * internal,
                "mass": f_m * radiant, "surface": (1.0 - f_m - f_w) * radiant,
                "windows": -f_w * radiant}

    def _surface(self, c: dict[str, Any], gains: dict[str, Any], x: Any, u: Any) -> Any:
        """The surface node θ_s [°C] from its (massless) heat balance."""
        return ((c["H_is"] * x.T_i + c["H_w"] * u.T_out + c["H_ms"] * x.T_m + gains["surface"])
                / (c["H_is"] + c["H_w"] + c["H_ms"]))

    def _flows(self, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Every heat flow [W, vectors over zones], positive into the node named first."""
        c = self._conductances(ops)
        gains = self._gains(c, u)
        T_s = self._surface(c, gains, x, u)
        internal = (self.U_int * ops.matvec(self.coupling(), x.T_i) if self.adjacency
                    else 0.0 * x.T_i)
        return {
            # into the air node
            "ventilation": c["H_ve"] * (u.T_out - x.T_i),
            "surface_air": c["H_is"] * (T_s - x.T_i),
            "internal_walls": internal,
            "gains_air": gains["air"],
            "hvac": u.Q_hvac,
            # into the mass node
            "surface_mass": c["H_ms"] * (T_s - x.T_m),
            "envelope_outdoor": c["H_em_out"] * (u.T_out - x.T_m),
            "ground": c["H_em_g"] * (u.T_ground - x.T_m),
            "gains_mass": gains["mass"],
            # into the building as a whole
            "windows": c["H_w"] * (u.T_out - T_s),
            "solar": gains["solar"],
            "gains": gains["internal"],
            "window_radiation": gains["windows"],
        }

    def rhs(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Time derivative of the air and mass temperatures [K/s]."""
        c = self._conductances(ops)
        f = self._flows(x, u, ops)
        air = (f["ventilation"] + f["surface_air"] + f["internal_walls"] + f["gains_air"]
               + f["hvac"])
        mass = f["surface_mass"] + f["envelope_outdoor"] + f["ground"] + f["gains_mass"]
        return Building5R1CState(T_i=air / c["C_a"], T_m=mass / c["C_m"])

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Room (air) temperature of each zone [°C]."""
        return BuildingOutputs(T_air=x.T_i)

    def ports(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Air temperature of each zone [°C], for its emitters."""
        return BuildingPorts(T_air=x.T_i)

    def surface_temperature(self, x: Any, u: Any, ops: Any) -> Any:
        """Surface node temperature θ_s of each zone [°C].

        Parameters
        ----------
        x, u : State, Inputs
            State and inputs (scalars or vectors in the backend of ``ops``).
        ops : Ops
            The backend namespace.
        """
        c = self._conductances(ops)
        return self._surface(c, self._gains(c, u), x, u)

    def operative_temperature(self, x: Any, u: Any, ops: Any) -> Any:
        """Operative temperature of each zone, ``0.3 θ_air + 0.7 θ_s`` [°C] (ISO
        13790:2008, eq. C.12).

        Parameters
        ----------
        x, u : State, Inputs
            State and inputs.
        ops : Ops
            The backend namespace.
        """
        return 0.3 * x.T_i + 0.7 * self.surface_temperature(x, u, ops)

    def stored_energy(self, x: Any, ops: Any) -> Any:
        """Heat held by the air, furnishings and mass relative to 0 °C [J]."""
        c = self._conductances(ops)
        return ops.sum(c["C_a"] * x.T_i) + ops.sum(c["C_m"] * x.T_m)

    def heat_flows(self, t: Any, x: Any, u: Any, ops: Any) -> dict[str, Any]:
        """Heat flows into the building [W], summed over zones (internal exchanges
        cancel; the surface node stores nothing)."""
        f = self._flows(x, u, ops)
        return {k: ops.sum(f[k]) for k in ("ventilation", "windows", "envelope_outdoor",
                                           "ground", "solar", "gains", "window_radiation",
                                           "hvac")}
