"""Names of the models the CLI and `bayesmtl.MODELS` know, with their options and simulators.

A `ModelSpec` ties a NumPyro model to: its default keyword arguments; which CLI options map to
which model keywords (``--clusters`` -> ``n_clusters``, ...); a simulator with one signature,
``simulate(key, n_tasks, n_per_task, n_features, **model_kwargs) -> (TaskData, truth)``; and the
inference methods it supports (``nuts``/``svi`` through `bayesmtl.fit`, plus a paper's own route
such as ``eb``, run by `bayesmtl.runners`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bayesmtl.models import hierarchical as _h
from bayesmtl.models import latent_hierarchy as _lh
from bayesmtl.models import sparse_mtl as _sp
from bayesmtl.models import task_clustering as _tc

__all__ = ["MODELS", "OPTION_KEYWORDS", "ModelSpec", "get_model"]

# CLI option (argparse dest) -> model keyword.
OPTION_KEYWORDS = {
    "likelihood": "likelihood",
    "noise": "noise",
    "centered": "centered",
    "clusters": "n_clusters",
    "hidden": "hidden",
    "prior": "prior",
    "rank": "rank",
    "leaf_var": "leaf_var",
}


@dataclass(frozen=True)
class ModelSpec:
    """A named model with its defaults, CLI options, simulator and inference methods."""

    name: str
    model: Callable
    description: str
    simulate: Callable
    defaults: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("nuts", "svi")
    family: str = "hierarchical"

    def model_kwargs(self, **cli_options) -> dict:
        """Model keywords from CLI option values (``None`` = not given); unsupported ones raise."""
        kw = dict(self.defaults)
        for opt, value in cli_options.items():
            if value is None or value is False:
                continue
            if opt not in self.options:
                raise ValueError(f"--{opt.replace('_', '-')}: not an option of model {self.name!r} "
                                 f"(its options: {', '.join(self.options) or 'none'})")
            kw[OPTION_KEYWORDS[opt]] = value
        return kw


def _simulate_hierarchical(model):
    def simulate(key, n_tasks, n_per_task, n_features, **kw):
        return _h.simulate(key, n_tasks, n_per_task, n_features, model=model, **kw)

    return simulate


def _simulate_bh(prior):
    def simulate(key, n_tasks, n_per_task, n_features, **kw):
        allowed = {"n_clusters", "hidden", "noise", "intercept", "activation"}
        return _tc.simulate(key, prior=prior, n_tasks=n_tasks, n_per_task=n_per_task,
                            n_features=n_features, **{k: v for k, v in kw.items()
                                                      if k in allowed})

    return simulate


def _simulate_lh(model):
    """Latent-hierarchy simulator; the true tree comes back JSON-ready: ``tree`` as the packed
    ``(K-1, 3)`` array ``[left, right, time]`` and ``newick``."""
    from bayesmtl.models.coalescent import pack, to_newick

    def simulate(key, n_tasks, n_per_task, n_features, **kw):
        allowed = {"likelihood", "leaf_var"}
        kw = {k: v for k, v in kw.items() if k in allowed}
        if "leaf_var" in kw:  # --leaf-var learn: drawn from its prior
            kw["leaf_var"] = None if kw["leaf_var"] == "learn" else float(kw["leaf_var"])
        data, truth = _lh.simulate(key, n_tasks, n_per_task, n_features, model=model, **kw)
        tree = truth["tree"]
        truth["newick"] = to_newick(tree)
        truth["tree"] = pack(tree)
        return data, truth

    return simulate


def _simulate_sparse(key, n_tasks, n_per_task, n_features, **kw):
    allowed = {"rank", "noise", "likelihood"}
    n_features = max(int(n_features), 4)
    return _sp.simulate(key, n=n_per_task, n_tasks=n_tasks, n_features=n_features,
                        n_blocks=min(4, n_features), n_active=1,
                        **{k: v for k, v in kw.items() if k in allowed})


_LIN = ("likelihood", "noise")
_BH = ("noise", "hidden")

MODELS: dict[str, ModelSpec] = {
    "pooled": ModelSpec(
        "pooled", _h.pooled, "one weight vector shared by all tasks (complete pooling)",
        _simulate_hierarchical(_h.pooled), options=_LIN),
    "independent": ModelSpec(
        "independent", _h.independent, "separate weights per task (no pooling)",
        _simulate_hierarchical(_h.independent), options=_LIN),
    "hierarchical": ModelSpec(
        "hierarchical", _h.hierarchical,
        "w_k ~ N(mu, diag(tau) LL' diag(tau)), LKJ correlations, non-centred (partial pooling)",
        _simulate_hierarchical(_h.hierarchical), options=_LIN + ("centered",)),
    "hierarchical-centered": ModelSpec(
        "hierarchical-centered", _h.hierarchical,
        "the hierarchical model in its centred parametrisation (funnel-prone; for comparison)",
        _simulate_hierarchical(_h.hierarchical), {"centered": True}, options=_LIN),
    "bh-gaussian": ModelSpec(
        "bh-gaussian", _tc.task_clustering_model,
        "Bakker & Heskes: y = A_i' h(x), A_i ~ N(m, Sigma) (--hidden H for a tanh layer)",
        _simulate_bh("gaussian"), {"prior": "gaussian"}, options=_BH,
        methods=("nuts", "svi", "eb"), family="task_clustering"),
    "task-mean": ModelSpec(
        "task-mean", _tc.task_clustering_model,
        "Bakker & Heskes: A_i ~ N(M f_i, Sigma), mean from task features f_i",
        _simulate_bh("task_mean"), {"prior": "task_mean"}, options=_BH,
        methods=("nuts", "svi", "eb"), family="task_clustering"),
    "clustering": ModelSpec(
        "clustering", _tc.task_clustering_model,
        "Bakker & Heskes task clustering: A_i ~ sum_a q_a N(m_a, Sigma_a) (--clusters C)",
        _simulate_bh("clustering"), {"prior": "clustering", "n_clusters": 3},
        options=_BH + ("clusters",), methods=("nuts", "svi", "eb"), family="task_clustering"),
    "gating": ModelSpec(
        "gating", _tc.task_clustering_model,
        "Bakker & Heskes task gating: q_ia = softmax_a(U_a' f_i) from task features",
        _simulate_bh("gating"), {"prior": "gating", "n_clusters": 3},
        options=_BH + ("clusters",), methods=("nuts", "svi", "eb"), family="task_clustering"),
    "latent-hierarchy": ModelSpec(
        "latent-hierarchy", _lh.mean_sharing,
        "Daume III 2009: task weights diffuse down a Kingman-coalescent tree over tasks "
        "(--method em: greedy-tree EM; mcmc: posterior over trees)",
        _simulate_lh("mean"), {}, options=("likelihood", "leaf_var"), methods=("em", "mcmc"),
        family="latent_hierarchy"),
    "latent-hierarchy-cov": ModelSpec(
        "latent-hierarchy-cov", _lh.covariance_sharing,
        "Daume III 2009 covariance sharing: log standard deviations of the task weights diffuse "
        "down a Kingman-coalescent tree (--method em: greedy-tree EM; mcmc: posterior over trees)",
        _simulate_lh("covariance"), {}, options=("likelihood",), methods=("em", "mcmc"),
        family="latent_hierarchy"),
    "sparse-mtl": ModelSpec(
        "sparse-mtl", _sp.sparse_mtl,
        "Archambeau, Guo & Zoeter 2011: y_n = W x_n + mu + eps_n, block GIG scale mixtures, "
        "low-rank task covariance (--prior, --rank; --method vem for the paper's VEM)",
        _simulate_sparse, {"prior": "laplace", "rank": 1}, options=("prior", "rank", "likelihood"),
        methods=("vem", "nuts", "svi"), family="sparse"),
}


def get_model(name: str) -> ModelSpec:
    """The `ModelSpec` called ``name``; a clear error lists the known names."""
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]
