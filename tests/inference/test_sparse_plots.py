"""Block-shrinkage and task-covariance plots: they show the given numbers and write real PNGs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from bayesmtl.inference.sparse_plots import (
    block_statistics,
    plot_block_shrinkage,
    plot_task_covariance,
    task_covariance_estimate,
)
from bayesmtl.inference.vem_sparse import VEMResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _vem_like():
    rng = np.random.default_rng(0)
    P, D = 3, 6
    blocks = np.array([0, 0, 1, 1, 2, 2])
    W = rng.normal(size=(P, D)) * np.array([1, 1, 0, 0, 1, 1])
    V = rng.normal(size=(P, 1))
    return VEMResult(
        W_mean=W, W_var=np.ones((P, D)), V_mean=V, task_cov=V @ V.T + 0.1 * np.eye(P),
        gamma_mean=np.array([0.8, 850.0, 1.3]), gamma_q=np.ones((3, 3)), mu=np.zeros(P),
        Sigma=np.eye(P), tau=0.1, prior=(-1.0, 1.0, 0.0), elbo=np.zeros(2), converged=True,
        blocks=blocks)


def _assert_png(path, min_bytes=4000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    img = mpimg.imread(path)
    # not a blank canvas: many distinct colours
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20


def test_block_statistics_of_vem_and_draws_agree_with_direct_computation():
    res = _vem_like()
    s = block_statistics(res)
    np.testing.assert_array_equal(s["gamma"], res.gamma_mean)
    expected = [np.linalg.norm(res.W_mean[:, res.blocks == q]) for q in range(3)]
    np.testing.assert_allclose(s["norm"], expected)
    assert s["norm"][1] == 0.0
    # draws: median of gamma (robust to the heavy tail), norm of the posterior mean
    g = np.array([[1.0, 10.0], [2.0, 1e6], [3.0, 30.0]])
    W = np.stack([np.ones((2, 2)) * k for k in (1.0, 2.0, 3.0)])
    d = block_statistics({"gamma": g, "W": W}, blocks=[0, 1])
    np.testing.assert_allclose(d["gamma"], [2.0, 30.0])
    np.testing.assert_allclose(d["norm"], [np.sqrt(8.0), np.sqrt(8.0)])


def test_block_shrinkage_plot_shows_the_values_and_writes_png(tmp_path):
    res = _vem_like()
    out = tmp_path / "shrinkage.png"
    fig = plot_block_shrinkage(res, out, true_active=[True, False, True])
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, res.gamma_mean)
    assert fig.axes[0].get_yscale() == "log"
    # the inactive block is hatched, the active ones are not
    assert [bool(p.get_hatch()) for p in fig.axes[0].patches] == [False, True, False]
    _assert_png(out)
    fig2 = plot_block_shrinkage(res, tmp_path / "norm.png", statistic="norm")
    np.testing.assert_allclose([p.get_height() for p in fig2.axes[0].patches],
                               block_statistics(res)["norm"])
    _assert_png(tmp_path / "norm.png")


def test_task_covariance_heatmaps_are_side_by_side_and_normalised(tmp_path):
    res = _vem_like()
    truth = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 3.0]])
    out = tmp_path / "taskcov.png"
    fig = plot_task_covariance(res, truth, out)
    left, right = (ax.images[0].get_array() for ax in fig.axes[:2])
    np.testing.assert_allclose(left, res.task_cov / np.trace(res.task_cov) * 3)
    np.testing.assert_allclose(right, truth / np.trace(truth) * 3)
    np.testing.assert_allclose(np.trace(left), 3.0)
    _assert_png(out)
    corr = plot_task_covariance(truth, normalize="corr").axes[0].images[0].get_array()
    np.testing.assert_allclose(np.diag(corr), 1.0)


def test_task_covariance_from_draws_is_the_posterior_mean():
    V = np.array([[[1.0], [0.0]], [[0.0], [2.0]]])  # two draws of a 2 x 1 V
    C = task_covariance_estimate({"V": V, "tau": np.array([0.1, 0.3])})
    np.testing.assert_allclose(C, [[0.7, 0.0], [0.0, 2.2]])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="statistic"):
        plot_block_shrinkage([1.0, 2.0], statistic="variance")
    with pytest.raises(ValueError, match="true_active"):
        plot_block_shrinkage([1.0, 2.0], true_active=[True])
    with pytest.raises(ValueError, match="positive"):
        plot_block_shrinkage([1.0, -2.0])
    with pytest.raises(ValueError, match="non-finite"):
        plot_block_shrinkage([1.0, np.nan])
    with pytest.raises(ValueError, match="shape mismatch"):
        plot_task_covariance(np.eye(3), np.eye(2))
    with pytest.raises(ValueError, match="normalize"):
        plot_task_covariance(np.eye(3), normalize="max")
    with pytest.raises(ValueError, match="gamma"):
        block_statistics({"W": np.ones((2, 2, 2))})
