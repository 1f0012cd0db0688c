"""Names of the models the CLI and `bayesmtl.list_models` know, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bayesmtl.models import hierarchical as _h

__all__ = ["ModelSpec", "MODELS", "get_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A named model: the NumPyro function, its default keyword arguments and its simulator."""

    name: str
    model: Callable
    description: str
    simulate: Callable
    defaults: dict = field(default_factory=dict)
    methods: tuple[str, ...] = ("nuts", "svi")


MODELS: dict[str, ModelSpec] = {
    "pooled": ModelSpec(
        "pooled", _h.pooled, "one weight vector shared by all tasks (complete pooling)",
        _h.simulate, {}),
    "independent": ModelSpec(
        "independent", _h.independent, "separate weights per task (no pooling)",
        _h.simulate, {}),
    "hierarchical": ModelSpec(
        "hierarchical", _h.hierarchical,
        "w_k ~ N(mu, diag(tau) LL' diag(tau)), LKJ correlations, non-centred (partial pooling)",
        _h.simulate, {}),
    "hierarchical-centered": ModelSpec(
        "hierarchical-centered", _h.hierarchical,
        "the hierarchical model in its centred parametrisation (funnel-prone; for comparison)",
        _h.simulate, {"centered": True}),
}


def get_model(name: str) -> ModelSpec:
    """The `ModelSpec` called ``name``; a clear error lists the known names."""
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]
