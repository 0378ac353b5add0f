"""Discrete-time linear model: three gravity-drained tanks in series, sampled at 1 s.

The reference discrete-time model: an exact linear map, so a filter or an optimiser on it
can be checked against textbook linear results. Only :mod:`processtwin.model` is imported
here; the matrices are computed once, in plain Python floats, when the module loads.
"""

from __future__ import annotations

from typing import Any, ClassVar

from processtwin.model import Model, Var, variables

__all__ = ["DiscreteTripleTank", "DiscreteTripleTankInputs", "DiscreteTripleTankOutputs",
           "DiscreteTripleTankState"]

Matrix = tuple[tuple[float, ...], ...]

# Physical data of the linearisation (the operating point is the model's default state).
AREA = 0.0154  # tank cross-section [m2] (Amira DTS200 three-tank system)
LEVELS = (0.5, 0.35, 0.2)  # operating levels h1, h2, h3 [m]
FLOW = 0.1  # operating flow through the three tanks, the pump's nominal flow [L/s]
SAMPLE_TIME = 1.0  # [s]


def _matmul(a: Matrix, b: Matrix) -> Matrix:
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(len(b)))
                       for j in range(len(b[0]))) for i in range(len(a)))


def _expm(m: Matrix) -> Matrix:
    """Matrix exponential by scaling and squaring of a Taylor series (Moler & Van Loan
    2003, *SIAM Rev.* 45, 3–49, method 3): the argument is scaled below norm 1/2, where 20
    terms leave a truncation error under 1e-25, then squared back."""
    n = len(m)
    norm = max(sum(abs(v) for v in row) for row in m)
    s = 0
    while norm > 0.5:
        norm /= 2.0
        s += 1
    scaled = tuple(tuple(v / 2.0**s for v in row) for row in m)
    eye = tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n))
    total, term = eye, eye
    for k in range(1, 21):
        term = tuple(tuple(v / k for v in row) for row in _matmul(term, scaled))
        total = tuple(tuple(a + b for a, b in zip(ra, rb, strict=True))
                      for ra, rb in zip(total, term, strict=True))
    for _ in range(s):
        total = _matmul(total, total)
    return total


def _discretise() -> tuple[Matrix, Matrix, Matrix, Matrix]:
    """Continuous (A_c, B_c) of the linearised tanks and their exact zero-order-hold
    discretisation (A, B) over one sample, via the exponential of the block matrix
    [[A_c, B_c], [0, 0]] (Van Loan 1978, *IEEE Trans. Autom. Control* 23, 395–404)."""
    q = FLOW * 1e-3  # [m3/s]
    # Torricelli outflow q_i = a_i sqrt(h_i) gives d q_i / d h_i = q / (2 h_i) at the point
    g = tuple(q / (2.0 * h) / AREA for h in LEVELS)  # inverse time constants [1/s]
    a_c = ((-g[0], 0.0, 0.0),
           (g[0], -g[1], 0.0),
           (0.0, g[1], -g[2]))
    b_c = ((1e-3 / AREA, 0.0),  # pump into tank 1 [m per L]
           (0.0, 1e-3 / AREA),  # disturbance inflow into tank 2
           (0.0, 0.0))
    block = tuple(tuple(v * SAMPLE_TIME for v in (*a_c[i], *b_c[i])) for i in range(3)) + (
        (0.0,) * 5, (0.0,) * 5)
    e = _expm(block)
    return a_c, b_c, tuple(row[:3] for row in e[:3]), tuple(row[3:] for row in e[:3])


A_C, B_C, A_D, B_D = _discretise()

DiscreteTripleTankState = variables(
    "DiscreteTripleTankState",
    h=Var("m", "liquid level in each tank", default=LEVELS, bounds=(0.0, None), shape=3,
          dim="tank"),
)

DiscreteTripleTankInputs = variables(
    "DiscreteTripleTankInputs",
    q_pump=Var("L/s", "pump flow into tank 1", default=FLOW, bounds=(0.0, None),
               kind="manipulated"),
    q_dist=Var("L/s", "unmeasured inflow into tank 2 (a leak in or a second feed)",
               default=0.0, kind="disturbance"),
)

DiscreteTripleTankOutputs = variables(
    "DiscreteTripleTankOutputs",
    h=Var("m", "level transmitter of each tank", kind="online", noise=0.002, shape=3,
          dim="tank"),
)


class DiscreteTripleTank(Model):
    r"""Three gravity-drained tanks in series, linearised and sampled (time unit: s).

    A pump fills tank 1 with :math:`q_{pump}` [L/s]; tank 1 drains into tank 2, which also
    receives a disturbance inflow :math:`q_{dist}` [L/s], and tank 2 drains into tank 3,
    which drains to the sump. With Torricelli outflows :math:`a_i \sqrt{h_i}` and equal
    cross-sections :math:`A` the levels obey
    :math:`A \dot h_1 = q_{pump} - a_1\sqrt{h_1}`,
    :math:`A \dot h_2 = a_1\sqrt{h_1} + q_{dist} - a_2\sqrt{h_2}`,
    :math:`A \dot h_3 = a_2\sqrt{h_2} - a_3\sqrt{h_3}`.
    Linearised at the steady state :math:`h^0 = (0.5, 0.35, 0.2)` m with the flow
    :math:`q^0 = 0.1` L/s through every tank (which sets :math:`a_i = q^0/\sqrt{h^0_i}`),
    the deviations obey :math:`\dot{\delta h} = A_c\,\delta h + B_c\,\delta u` with
    :math:`-1/\tau_i = -q^0 / (2 A h^0_i)` on the diagonal of :math:`A_c`, as in the
    quadruple-tank linearisation of Johansson (2000), *IEEE Trans. Control Syst. Technol.*
    8, 456–465.
    Under a zero-order hold over :math:`T = 1` s the map is exact:

    .. math::

        h[k+1] = h^0 + A\,(h[k] - h^0) + B\,(u[k] - u^0), \qquad
        A = e^{A_c T}, \quad B = \int_0^T e^{A_c s}\,ds\,B_c

    as in Åström & Wittenmark (1997), *Computer-Controlled Systems*, 3rd ed., §2.3; it is
    computed once from the exponential of the block matrix :math:`[[A_c, B_c], [0, 0]]\,T`.
    ``A_C``, ``B_C``, ``A`` and ``B`` are class attributes (tuples of rows).

    The cross-section, 0.0154 m2, is that of the Amira DTS200 laboratory three-tank system
    (Amira GmbH, Duisburg, *DTS200 Laboratory Setup Three-Tank-System*), whose tanks
    drain through 5e-5 m2 pipes: flows of the order of 0.1 L/s at these levels. Measured
    online: a level transmitter on every tank.
    """

    name: ClassVar[str] = "triple_tank_discrete"
    State: ClassVar[type] = DiscreteTripleTankState
    Inputs: ClassVar[type] = DiscreteTripleTankInputs
    Outputs: ClassVar[type] = DiscreteTripleTankOutputs
    time_unit: ClassVar[str] = "s"
    sample_time: ClassVar[float] = SAMPLE_TIME
    A_C: ClassVar[Matrix] = A_C
    B_C: ClassVar[Matrix] = B_C
    A: ClassVar[Matrix] = A_D
    B: ClassVar[Matrix] = B_D

    def step(self, t: Any, x: Any, u: Any, dt: Any, ops: Any) -> Any:
        """Levels one sample later [m] (``dt`` is ``sample_time``; the matrices hold for
        that period only)."""
        h0 = ops.concat(list(LEVELS))
        du = ops.concat([u.q_pump - FLOW, u.q_dist])
        return DiscreteTripleTankState(
            h=h0 + ops.matvec(self.A, x.h - h0) + ops.matvec(self.B, du))

    def measure(self, t: Any, x: Any, u: Any, ops: Any) -> Any:
        """Level transmitters [m]."""
        return DiscreteTripleTankOutputs(h=x.h)
