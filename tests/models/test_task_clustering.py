"""Bakker & Heskes task-clustering models: shapes, reductions, memberships, relabelling, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.models.task_clustering import (
    PRIORS,
    clustering_model,
    gating_model,
    membership_probabilities,
    relabel_samples,
    simulate,
    task_clustering_model,
)
from bayesmtl.models.task_clustering_metrics import adjusted_rand_index
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy.stats import multivariate_normal


@pytest.fixture(scope="module")
def small():
    return simulate(jax.random.key(0), prior="gating", n_tasks=5, n_per_task=4, n_clusters=3)


def _identity_corr(site):
    """LKJ correlation factors set to the identity (sampling LKJ eagerly costs seconds of
    compilation per shape; its log density is still evaluated in the trace)."""
    if site["name"].endswith("_corr"):
        shape = site["fn"].shape()
        return jnp.broadcast_to(jnp.eye(shape[-1]), shape)
    return None


def _prior_draw(key, data, *, fix_corr=True, **kwargs):
    """One prior-predictive draw, traced eagerly (no whole-model compilation: cheap for tests)."""
    model = handlers.substitute(task_clustering_model, substitute_fn=_identity_corr) \
        if fix_corr else task_clustering_model
    tr = handlers.trace(handlers.seed(model, key)).get_trace(data, **kwargs)
    out = {name: np.asarray(site["value"]) for name, site in tr.items()
           if site["type"] in ("sample", "deterministic")}
    out["_log_density"] = float(sum(jnp.sum(site["fn"].log_prob(site["value"]))
                                     for site in tr.values() if site["type"] == "sample"))
    return out


@pytest.mark.parametrize("prior", PRIORS)
def test_prior_predictive_shapes_and_finite_log_density(small, prior):
    data = small[0]
    C = 3 if prior in ("clustering", "gating") else 1
    draw = _prior_draw(jax.random.key(1), data.without_y(), prior=prior, n_clusters=C, hidden=2,
                       noise="task")
    assert draw["y"].shape == (data.n,)
    assert draw["A"].shape == (data.n_tasks, 3)   # p = hidden + 1
    assert draw["noise_scale"].shape == (data.n_tasks,)
    assert np.all(np.isfinite(draw["y"])) and np.isfinite(draw["_log_density"])


@pytest.mark.parametrize("prior", ["task_mean", "gating"])
def test_models_trace_with_the_data_as_a_jit_argument(small, prior):
    # `fit` runs NUTS with jit_model_args=True: task features arrive as tracers, and the eager
    # checks must read shapes only (they once called np.asarray on them and failed)
    data = small[0]
    C = 3 if prior == "gating" else 1

    def draw_y(d):
        tr = handlers.trace(handlers.seed(task_clustering_model, 0)).get_trace(
            d, prior=prior, n_clusters=C)
        return tr["y"]["value"]

    jaxpr = jax.make_jaxpr(draw_y)(data)   # traced, not compiled: cheap
    assert jaxpr.out_avals[0].shape == (data.n,)


def test_cluster_means_are_ordered_in_every_draw(small):
    for seed in range(5):
        draw = _prior_draw(jax.random.key(seed), small[0].without_y(), prior="clustering",
                           n_clusters=3, cov=np.eye(3))   # fixed cov: ordering only
        assert np.all(np.diff(draw["cluster_mean"][:, -1]) > 0)


def _fixed(p, C=3, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(C, p, p))
    return rng.normal(size=(C, p)) * 2, B @ np.swapaxes(B, -1, -2) + np.eye(p)


def test_gating_with_constant_features_reduces_to_clustering_log_density(small):
    data = small[0]
    mean, cov = _fixed(3)
    q = np.array([0.2, 0.3, 0.5])
    A = {"A": np.random.default_rng(1).normal(size=(data.n_tasks, 3))}
    fixed = {"n_clusters": 3, "mean": mean, "cov": cov, "noise_scale": 0.5}
    lc, _ = log_density(clustering_model, (data,), dict(fixed, weights=q), A)
    ones = data.__class__(X=data.X, y=data.y, task=data.task,
                          task_features=np.ones((data.n_tasks, 1)))
    lg, _ = log_density(gating_model, (ones,), dict(fixed, gates=np.log(q)[None],
                                                    intercept=False), A)
    np.testing.assert_allclose(lg, lc, rtol=1e-6)


def test_membership_probabilities_match_bayes_rule_and_sum_to_one(small):
    data = small[0]
    mean, cov = _fixed(3, seed=2)
    q = np.array([0.2, 0.3, 0.5])
    A = np.random.default_rng(3).normal(size=(4, data.n_tasks, 3)) * 2
    probs = np.asarray(membership_probabilities({"A": A}, data, prior="clustering", mean=mean,
                                                cov=cov, weights=q))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    for i in range(data.n_tasks):
        per = []
        for s in range(4):
            lp = np.log(q) + np.array([multivariate_normal(mean[a], cov[a]).logpdf(A[s, i])
                                       for a in range(3)])
            per.append(np.exp(lp - np.logaddexp.reduce(lp)))
        np.testing.assert_allclose(probs[i], np.mean(per, 0), atol=1e-4)


def test_relabelling_makes_memberships_agree_across_label_switched_chains(small):
    data = small[0]
    rng = np.random.default_rng(4)
    mean, cov = _fixed(3, seed=5)
    mean[:, -1] = [-3.0, 0.0, 3.0]
    chain = {"A": rng.normal(size=(6, data.n_tasks, 3)) * 2,
             "cluster_mean": np.broadcast_to(mean, (6, 3, 3)),
             "cluster_scale_tril": np.broadcast_to(np.linalg.cholesky(cov), (6, 3, 3, 3)),
             "weights": np.broadcast_to([0.2, 0.3, 0.5], (6, 3))}
    perm = np.array([2, 0, 1])
    switched = {k: (v[..., perm, :] if k == "cluster_mean" else v[..., perm, :, :]
                    if k == "cluster_scale_tril" else v[..., perm] if k == "weights" else v)
                for k, v in chain.items()}
    both = {k: np.stack([chain[k], switched[k]]) for k in chain}   # (chain, draw, ...)
    fixed = relabel_samples(both)
    per_chain = [membership_probabilities({k: v[c] for k, v in fixed.items()}, data)
                 for c in range(2)]
    np.testing.assert_allclose(per_chain[0], per_chain[1], atol=1e-6)
    np.testing.assert_allclose(np.asarray(fixed["cluster_mean"])[1], chain["cluster_mean"])


def test_simulated_clusters_are_well_separated_and_labelled_in_order():
    data, truth = simulate(jax.random.key(7), prior="clustering", n_tasks=40, n_per_task=3)
    m = np.asarray(truth["cluster_mean"])
    assert np.all(np.diff(m[:, -1]) > 0)
    A = np.asarray(truth["A"])
    nearest = np.argmin(((A[:, None] - m[None]) ** 2).sum(-1), axis=1)
    assert adjusted_rand_index(truth["labels"], nearest) == 1.0
    assert data.task_features.shape == (40, 2)


def test_adjusted_rand_index_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 2, 2]) == 1.0
    # hand-computed from the contingency tables: index, row pairs, column pairs, all pairs
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)  # 1, 2, 3, 6
    expected = (2 - 6 * 3 / 15) / ((6 + 3) / 2 - 6 * 3 / 15)                        # 2, 6, 3, 15
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(expected)


@pytest.mark.parametrize("kwargs, match", [
    ({"prior": "gating", "n_clusters": 2}, "task_features"),
    ({"prior": "task_mean"}, "task_features"),
    ({"prior": "clustering", "n_clusters": 0}, "n_clusters"),
    ({"prior": "clustering", "n_clusters": 2, "noise": "per-row"}, "noise"),
    ({"prior": "gaussian", "hidden": -1}, "hidden"),
])
def test_model_bad_inputs_raise_clear_errors(kwargs, match):
    data = TaskData(X=np.ones((4, 1)), y=np.zeros(4), task=[0, 0, 1, 1])
    with pytest.raises(ValueError, match=match):
        task_clustering_model(data, **kwargs)


def test_task_features_with_wrong_row_count_raise():
    with pytest.raises(ValueError, match="task_features"):
        TaskData(X=np.ones((4, 1)), y=np.zeros(4), task=[0, 0, 1, 1],
                 task_features=np.ones((3, 2)))


def test_sorted_normal_density_integrates_to_one_and_matches_its_draws():
    """SortedNormal(loc, scale, 2): the density ``2 N(y1) N(y2)`` integrates to one over its support
    ``y1 < y2``, and the mean and covariance of its draws match the density's (double integrals),
    whose ``E[y2]`` is the known ``E[max] = loc + scale / sqrt(pi)``."""
    from bayesmtl.models.task_clustering import SortedNormal
    from scipy.integrate import dblquad

    loc, scale, n = 0.5, 1.5, 20000
    d = SortedNormal(loc, scale, 2)
    with jax.enable_x64(True):
        density = jax.jit(lambda y1, y2: jnp.exp(d.log_prob(jnp.stack([y1, y2]))))

        def expect(f):  # integral of f(y1, y2) * density over the support -inf < y1 < y2 < inf
            return dblquad(lambda y2, y1: f(y1, y2) * float(density(y1, y2)), -np.inf, np.inf,
                           lambda y1: y1, np.inf, epsabs=1e-8, epsrel=1e-6)[0]

        assert abs(expect(lambda a, b: 1.0) - 1.0) < 1e-6
        m = np.array([expect(lambda a, b: a), expect(lambda a, b: b)])
        second = [[expect(lambda a, b: a * a), expect(lambda a, b: a * b)],
                  [expect(lambda a, b: a * b), expect(lambda a, b: b * b)]]
    cov = np.array(second) - np.outer(m, m)
    assert abs(m[1] - (loc + scale / np.sqrt(np.pi))) < 1e-6
    y = np.asarray(d.sample(jax.random.key(8), (n,)), float)
    assert np.all(y[:, 1] > y[:, 0])
    # within 4 Monte Carlo standard errors: sd / sqrt(n) for the means (~0.008), and the sd of the
    # centred products over sqrt(n) for the covariance entries (~0.01)
    assert np.all(np.abs(y.mean(0) - m) < 4 * np.sqrt(np.diag(cov) / n)), (y.mean(0), m)
    r = y - y.mean(0)
    se_cov = np.sqrt(np.var(r[:, :, None] * r[:, None, :], axis=0) / n)
    assert np.all(np.abs(np.cov(y.T) - cov) < 4 * se_cov), (np.cov(y.T), cov)