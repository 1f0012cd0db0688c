"""Matrix-normal helpers against the dense multivariate normal of vec(W)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from bayesmtl.models.matrix_normal import (
    matrix_normal_log_prob,
    sample_matrix_normal,
    vec_covariance,
)


def _spd(rng, n):
    A = rng.normal(size=(n, n))
    return A @ A.T + n * np.eye(n)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    P, D = 3, 4
    return rng, P, D, rng.normal(size=(P, D)), _spd(rng, P), _spd(rng, D)


def test_log_prob_matches_dense_mvn_of_vec(setup):
    rng, P, D, M, U, V = setup
    W = rng.normal(size=(5, P, D)) * 3
    with jax.enable_x64(True):
        ours = matrix_normal_log_prob(W, M, np.linalg.cholesky(U), np.linalg.cholesky(V))
        cov = np.asarray(vec_covariance(U, V))
    vec = lambda A: A.reshape(A.shape[:-2] + (-1,), order="F") if A.ndim == 2 else np.stack(
        [a.reshape(-1, order="F") for a in A])
    ref = st.multivariate_normal(vec(M), cov).logpdf(vec(W))
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_samples_have_kronecker_covariance(setup):
    _, _, _, M, U, V = setup
    n = 40000
    with jax.enable_x64(True):
        W = np.asarray(sample_matrix_normal(jax.random.key(1), M, np.linalg.cholesky(U),
                                            np.linalg.cholesky(V), (n,)))
    flat = W.transpose(0, 2, 1).reshape(n, -1)  # vec stacks columns
    cov = np.kron(V, U)
    sd = np.sqrt(np.outer(np.diag(cov), np.diag(cov)) + cov**2)  # sd of a sample covariance entry
    err = (np.cov(flat.T) - cov) / (sd / np.sqrt(n))
    assert np.abs(err).max() < 5.0  # 144 entries, |z| < 5
    np.testing.assert_allclose(W.mean(0), M, atol=5 * np.sqrt(np.diag(cov)).max() / np.sqrt(n))


def test_shape_mismatch_raises(setup):
    _, P, D, M, _, _ = setup
    with pytest.raises(ValueError, match="col_scale_tril"):
        matrix_normal_log_prob(M, 0.0, jnp.eye(P), jnp.eye(D + 1))
    with pytest.raises(ValueError, match="row_scale_tril"):
        sample_matrix_normal(jax.random.key(0), M, jnp.eye(P + 1), jnp.eye(D))
