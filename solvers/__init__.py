"""Optimiser back-ends (``processtwin.solvers``): CasADi transcription and Pyomo scheduling."""

__all__: list[str] = []
