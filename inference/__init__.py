"""How beliefs are updated: samplers, diagnostics, comparison, calibration, papers' algorithms."""

__all__: list[str] = []
