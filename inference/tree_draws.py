"""Draws from the latent-hierarchy tree samplers and what is read off them.

`TreePosterior` holds the trees per chain and the continuous draws of
`bayesmtl.inference.tree_posterior.tree_posterior` (mean sharing) and
`bayesmtl.inference.latent_hierarchy_cov_mcmc.covariance_tree_posterior` (covariance sharing), with
an ArviZ DataTree (posterior, and for observed data ``log_likelihood`` and ``observed_data``), and
the summaries: clade probabilities, ASDSF, R-hat, the maximum-clade-credibility tree, the posterior
task similarity and the log predictive density of held-out rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.data import TaskData
from bayesmtl.inference.tree_mcmc import asdsf, clade_probabilities, mcc_tree
from bayesmtl.models.coalescent import Tree, to_newick, tree_covariance
from scipy import stats
from scipy.special import log_expit

__all__ = ["TreePosterior"]


@partial(jax.jit, static_argnames=("root_var",))
def _mean_cov(merges, times, root_var):
    return jnp.mean(jax.vmap(lambda m, t: tree_covariance(Tree(m, t), root_var))(merges, times), 0)


@dataclass
class TreePosterior:
    """Draws of `tree_posterior` (mean sharing) or
    `~bayesmtl.inference.latent_hierarchy_cov_mcmc.covariance_tree_posterior` (covariance sharing):
    trees per chain and continuous parameters ``(chain, draw, ...)``.

    Attributes
    ----------
    trees : list of list of Tree
        ``trees[c][s]``: draw ``s`` of chain ``c``.
    samples : dict
        Mean sharing: ``w (chain, draw, K, D)``, ``mu0``, ``Lambda``, ``noise`` (Gaussian, when
        sampled), ``leaf_var`` (when learnt) and ``tree_height`` (the root time). Covariance sharing: ``log_scale``, ``R``,
        ``Lambda``, ``w``, ``noise`` (when sampled), ``tree_height``.
    idata : xarray.DataTree
        ArviZ DataTree of ``samples`` (dims ``task``, ``feature``, ``feature_bis``).
    accept : dict
        Acceptance rates of the tree and scale moves (and of NUTS, for covariance sharing).
    likelihood, root_var, task_names, runtime_s, extra
    """

    trees: list
    samples: dict
    idata: object
    accept: dict
    likelihood: str
    root_var: float
    task_names: tuple | None = None
    runtime_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_chains(cls, chains, data, *, likelihood, root_var, runtime_s, extra):
        """Assemble per-chain results ``(trees, draws dict, acceptance dict, ...)``: draws are
        stacked to ``(chain, draw, ...)`` and acceptance rates averaged over chains."""
        samples = {name: np.stack([ch[1][name] for ch in chains]) for name in chains[0][1]}
        accept = {m: float(np.mean([ch[2][m] for ch in chains])) for m in chains[0][2]}
        return cls(trees=[ch[0] for ch in chains], samples=samples,
                   idata=_datatree(samples, data, likelihood, extra.get("noise_scale")),
                   accept=accept, likelihood=likelihood,
                   root_var=float(root_var), task_names=data.task_names, runtime_s=runtime_s,
                   extra=extra)  # fmt: skip

    @property
    def all_trees(self) -> list:
        return [t for chain in self.trees for t in chain]

    def clade_probabilities(self, min_probability: float = 0.0) -> dict:
        """Posterior probability of every clade (frozenset of task indices), chains pooled."""
        return clade_probabilities(self.all_trees, min_probability=min_probability)

    def asdsf(self, min_frequency: float = 0.1) -> float:
        """Average standard deviation of split frequencies between chains (< 0.05: good)."""
        return asdsf(self.trees, min_frequency=min_frequency)

    def rhat(self) -> dict:
        """Largest ArviZ rank-normalised R-hat of each continuous variable."""
        import arviz as az

        post = self.idata.posterior.to_dataset()
        out = {}
        for name, da in az.rhat(post).data_vars.items():
            v = np.asarray(da.values, float)
            v = v[np.isfinite(v)]
            out[name] = float(v.max()) if v.size else float("nan")
        return out

    @property
    def max_rhat(self) -> float:
        return max(self.rhat().values())

    def mcc_tree(self) -> Tree:
        """Maximum clade credibility tree with mean clade heights."""
        return mcc_tree(self.all_trees, probabilities=self.clade_probabilities())

    def similarity(self, *, correlation: bool = False) -> np.ndarray:
        """Posterior task similarity ``E[C]`` ``(K, K)`` (or the matching correlation matrix).

        ``C`` includes the leaf variance on its diagonal when the model has one."""
        ts = self.all_trees
        with jax.enable_x64(True):
            c = np.asarray(
                _mean_cov(
                    jnp.asarray(np.stack([np.asarray(t.merges) for t in ts])),
                    jnp.asarray(np.stack([np.asarray(t.times, float) for t in ts])),
                    float(self.root_var),
                )
            )
        if "leaf_var" in self.samples:
            c = c + float(np.mean(self.samples["leaf_var"])) * np.eye(len(c))
        elif self.extra.get("leaf_var"):
            c = c + float(self.extra["leaf_var"]) * np.eye(len(c))
        if correlation:
            s = np.sqrt(np.diag(c))
            c = c / s[:, None] / s[None, :]
        return c

    def log_predictive(self, data: TaskData) -> np.ndarray:
        """Log pointwise predictive density of each row of ``data`` (held-out rows), pooled draws."""
        if data.y is None:
            raise ValueError("data: needs y to score")
        w = self.samples["w"]
        noise = self.samples.get("noise")
        if self.likelihood == "gaussian" and noise is None:
            noise = np.full(w.shape[:2], float(self.extra["noise_scale"]))
        lp = _pointwise_log_lik(w, noise, data, self.likelihood).reshape(-1, data.n)
        return np.logaddexp.reduce(lp, axis=0) - np.log(len(lp))

    def summary(self, *, min_probability: float = 0.05, names=None) -> dict:
        """The dict the CLI writes to ``summary.json``.

        ``{"clade_probabilities": [{"tasks": [...], "probability": p}, ...], "newick": MCC tree,
        "asdsf": ..., "max_rhat": ..., "acceptance": ...}``: clades with p >= min_probability,
        largest first, task indices from 0, plus ``"names"`` when the tasks have names; and
        ``elpd_loo``, ``elpd_loo_se``, ``p_loo`` and ``pareto_k_high`` (observations whose Pareto k
        exceeds ArviZ's ``good_k``, at most 0.7) when the draws were fitted to observed data.
        """
        names = self.task_names if names is None else names
        probs = self.clade_probabilities(min_probability)
        clades_out = [
            {"tasks": sorted(int(i) for i in c), "probability": round(float(p), 6)}
            for c, p in sorted(probs.items(), key=lambda kv: (-kv[1], sorted(kv[0])))
        ]
        if names is not None:  # the tasks' names too, as the Newick tree and the plots show them
            for entry in clades_out:
                entry["names"] = [str(names[i]) for i in entry["tasks"]]
        n_chains = len(self.trees)
        return {
            "clade_probabilities": clades_out,
            "newick": to_newick(self.mcc_tree(), names),
            "asdsf": self.asdsf() if n_chains > 1 else None,
            "max_rhat": self.max_rhat if n_chains > 1 else None,
            "acceptance": {k: round(float(v), 4) for k, v in self.accept.items()},
            **self._loo_summary(),
        }

    def loo(self):
        """PSIS-LOO (`arviz.loo`, pointwise) of the rows the sampler was fitted to; ``None`` without
        observed data. `bayesmtl.inference.compare.compare` ranks it against NUTS fits."""
        if self.idata is None or "log_likelihood" not in self.idata.children:
            return None
        import arviz as az

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # high Pareto k: reported in pareto_k_high
            return az.loo(self.idata, pointwise=True)

    def _loo_summary(self) -> dict:
        res = self.loo()
        if res is None:
            return {}
        k = np.asarray(res.pareto_k)
        good = float(getattr(res, "good_k", 0.7))  # ArviZ's sample-size-aware threshold
        return {"elpd_loo": float(res.elpd), "elpd_loo_se": float(res.se), "p_loo": float(res.p),
                "pareto_k_high": int((k > good).sum())}


def _pointwise_log_lik(w, noise, data, likelihood) -> np.ndarray:
    """``log p(y_n | draw)`` ``(chain, draw, obs)`` from weight draws ``(chain, draw, K, D)`` and
    noise draws ``(chain, draw)`` (Gaussian; ``None`` for Bernoulli)."""
    out = np.empty(w.shape[:2] + (data.n,))
    step = max(1, 2_000_000 // max(data.n * w.shape[-1], 1))  # draws per block: bounded memory
    for c in range(w.shape[0]):
        for a in range(0, w.shape[1], step):
            eta = np.einsum("nd,snd->sn", data.X, w[c, a : a + step][:, data.task])
            if likelihood == "gaussian":
                out[c, a : a + step] = stats.norm.logpdf(data.y, eta, noise[c, a : a + step, None])
            else:
                out[c, a : a + step] = np.where(data.y > 0.5, log_expit(eta), log_expit(-eta))
    return out


def _datatree(samples, data, likelihood=None, noise_scale=None):
    """ArviZ DataTree of the draws, on `TaskData.coords`; with observed ``y`` and a likelihood it
    also holds ``log_likelihood`` (``y``, dims ``chain, draw, obs``), so that PSIS-LOO and
    `bayesmtl.inference.compare.compare` put the tree beside the NUTS models."""
    from arviz_base import from_dict

    coords = data.coords()
    coords["feature_bis"] = coords["feature"]
    dims = {"w": ["task", "feature"], "log_scale": ["task", "feature"], "mu0": ["feature"],
            "Lambda": ["feature", "feature_bis"], "R": ["feature", "feature_bis"]}  # fmt: skip
    dims = {n: v for n, v in dims.items() if n in samples}
    groups = {"posterior": samples}
    if likelihood is not None and data.y is not None and "w" in samples:
        w = samples["w"]
        noise = samples.get("noise")
        if likelihood == "gaussian" and noise is None:
            noise = np.full(w.shape[:2], float(noise_scale))
        groups["log_likelihood"] = {"y": _pointwise_log_lik(w, noise, data, likelihood)}
        groups["observed_data"] = {"y": np.asarray(data.y)}
        dims["y"] = ["obs"]
    return from_dict(groups, coords=coords, dims=dims)
