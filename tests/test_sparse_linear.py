"""Tests for sparse_linear.py against references computed independently of it.

References used: np.linalg.pinv / lstsq, brute force over all 2-sparse supports,
the Lasso subgradient (KKT) conditions, scikit-learn's coordinate-descent Lasso,
central finite differences, hand-derived values, and grid search for prox operators.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparse_linear as sl  # noqa: E402

# The lab's data, typed in again from the assignment so the module's constants are
# themselves under test.
X = np.array([[1, -2, -1, -1, 1], [2, -1, 2, 0, -2], [-1, 0, 2, 2, 1]], dtype=float)
Y = np.array([7, 1, 1], dtype=float)
LAMBDAS = (0.2, 0.5, 1.0, 2.0)
CONVERGED_STEPS = 20_000  # ~0.1 s per run; enough for the slow null-space drift of L1


def loss_by_loop(w: np.ndarray) -> float:
    """L = sum_i (X_i W - y_i)^2, written as the literal sum over data points."""
    return sum((float(X[i] @ w) - Y[i]) ** 2 for i in range(len(Y)))


def update_by_loop(w: np.ndarray, mu: float) -> np.ndarray:
    """Part (a): W^{k+1} = W^k - 2 mu sum_i x_i^T (x_i W^k - y_i)."""
    return w - 2 * mu * sum(X[i] * (float(X[i] @ w) - Y[i]) for i in range(len(Y)))


def best_two_sparse() -> tuple[np.ndarray, float]:
    """Brute force over all C(5, 2) = 10 supports, each solved by lstsq."""
    best_w, best_l = np.zeros(5), np.inf
    for support in itertools.combinations(range(5), 2):
        cols = list(support)
        coef = np.linalg.lstsq(X[:, cols], Y, rcond=None)[0]
        w = np.zeros(5)
        w[cols] = coef
        if loss_by_loop(w) < best_l:
            best_w, best_l = w, loss_by_loop(w)
    return best_w, best_l


def sklearn_lasso(lam: float) -> np.ndarray:
    """Minimizer of ||y - Xw||^2 + lam ||w||_1 via scikit-learn.

    sklearn minimizes (1 / (2 n)) ||y - Xw||^2 + alpha ||w||_1. Dividing our
    objective by 2n (which does not move the minimizer) gives
    (1 / (2 n)) ||y - Xw||^2 + (lam / (2 n)) ||w||_1, hence alpha = lam / (2 n),
    with n = 3 samples and no intercept (our model has none).
    """
    from sklearn.linear_model import Lasso

    n = X.shape[0]
    model = Lasso(alpha=lam / (2 * n), fit_intercept=False, tol=1e-14, max_iter=1_000_000)
    return model.fit(X, Y).coef_


def assert_lasso_kkt(w: np.ndarray, lam: float, atol: float = 1e-8) -> None:
    """0 in grad L(w) + lam * d||w||_1: g_j = -lam sign(w_j) if w_j != 0, |g_j| <= lam else."""
    g = 2 * X.T @ (X @ w - Y)  # gradient of the sum of squares, computed here directly
    nz = w != 0
    np.testing.assert_allclose(g[nz], -lam * np.sign(w[nz]), atol=atol)
    assert np.all(np.abs(g[~nz]) <= lam + atol)


# ----------------------------------------------------------------------------- data, loss, gradient
def test_data_constants_match_assignment() -> None:
    np.testing.assert_array_equal(sl.X_DATA, X)
    np.testing.assert_array_equal(sl.Y_DATA, Y)
    assert (sl.MU, sl.STEPS) == (0.02, 200)


def test_loss_is_a_sum_not_a_mean() -> None:
    # L(0) = 7^2 + 1^2 + 1^2 = 51 by hand; a mean would give 17.
    assert sl.loss(np.zeros(5)) == pytest.approx(51.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        w = rng.normal(size=5)
        assert sl.loss(w) == pytest.approx(loss_by_loop(w), rel=1e-12)


def test_gradient_matches_central_finite_differences() -> None:
    rng = np.random.default_rng(1)
    h = 1e-6
    for _ in range(5):
        w = rng.normal(size=5)
        fd = np.array([(loss_by_loop(w + h * e) - loss_by_loop(w - h * e)) / (2 * h)
                       for e in np.eye(5)])
        np.testing.assert_allclose(sl.gradient(w), fd, rtol=1e-6, atol=1e-6)


def test_one_gd_step_matches_symbolic_update() -> None:
    w0 = np.array([0.3, -1.0, 0.2, 0.5, -0.4])
    traj = sl.gradient_descent(w0=w0, steps=1)
    np.testing.assert_allclose(traj.weights[1], update_by_loop(w0, 0.02), atol=1e-12)


def test_trajectory_shapes_and_start() -> None:
    traj = sl.projected_gd(2)
    assert traj.weights.shape == (201, 5) and traj.losses.shape == (201,)
    np.testing.assert_array_equal(traj.weights[0], np.zeros(5))
    assert traj.losses[0] == pytest.approx(51.0)
    np.testing.assert_allclose(traj.losses, [loss_by_loop(w) for w in traj.weights], rtol=1e-10)


# ----------------------------------------------------------------------------- (b) plain GD
def test_plain_gd_converges_to_min_norm_least_squares() -> None:
    traj = sl.gradient_descent()
    w_pinv = np.linalg.pinv(X) @ Y
    w_lstsq = np.linalg.lstsq(X, Y, rcond=None)[0]  # also min-norm for rank-deficient X
    np.testing.assert_allclose(traj.final_weights, w_pinv, atol=1e-8)
    np.testing.assert_allclose(traj.final_weights, w_lstsq, atol=1e-8)
    assert traj.final_loss < 1e-20
    assert np.count_nonzero(np.abs(traj.final_weights) > 1e-3) == 5  # not sparse


# ----------------------------------------------------------------------------- (c) projected GD
def test_project_top_k_closed_form_and_ties() -> None:
    w = np.array([1.0, -3.0, 0.5, 2.0, -0.1])
    np.testing.assert_array_equal(sl.project_top_k(w, 2), [0, -3, 0, 2, 0])
    np.testing.assert_array_equal(sl.project_top_k(w, 0), np.zeros(5))
    np.testing.assert_array_equal(sl.project_top_k(w, 5), w)
    # ties in |w| go to the lower index
    np.testing.assert_array_equal(sl.project_top_k(np.array([1.0, -1.0, 1.0, 0.0, 0.0]), 2),
                                  [1, -1, 0, 0, 0])


def test_projected_gd_reaches_best_two_sparse_solution() -> None:
    w_best, l_best = best_two_sparse()
    traj = sl.projected_gd(2, steps=2000)
    assert np.all(np.count_nonzero(traj.weights, axis=1) <= 2)  # feasible at every step
    np.testing.assert_allclose(traj.final_weights, w_best, atol=1e-8)
    assert traj.final_loss == pytest.approx(l_best, abs=1e-12)


# ----------------------------------------------------------------------------- (d) L1 subgradient
def test_l1_subgradient_step_matches_formula() -> None:
    w0 = np.array([0.3, -1.0, 0.0, 0.5, -0.4])
    lam = 0.7
    expected = update_by_loop(w0, 0.02) - 0.02 * lam * np.array([1, -1, 0, 1, -1])
    np.testing.assert_allclose(sl.l1_subgradient_gd(lam, w0=w0, steps=1).weights[1],
                               expected, atol=1e-12)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_l1_subgradient_ends_near_lasso_solution(lam: float) -> None:
    # With a constant step, subgradient descent only reaches an O(mu * lam)
    # neighbourhood of the minimizer; 3 * mu * lam is a loose bound for that.
    traj = sl.l1_subgradient_gd(lam, steps=2000)
    w_ref = sklearn_lasso(lam)
    assert np.max(np.abs(traj.final_weights - w_ref)) < 3 * 0.02 * lam


# ----------------------------------------------------------------------------- (e) proximal L1
def test_soft_threshold_closed_form() -> None:
    v = np.array([-3.0, -0.5, -0.2, 0.0, 0.2, 0.5, 2.0])
    np.testing.assert_allclose(sl.soft_threshold(v, 0.5), [-2.5, 0, 0, 0, 0, 0, 1.5])
    np.testing.assert_allclose(sl.soft_threshold(v, 0.0), v)


def test_soft_threshold_is_the_l1_prox_by_grid_search() -> None:
    grid = np.linspace(-5, 5, 200_001)  # spacing 5e-5
    t = 0.37
    for v in (-2.0, -0.3, 0.1, 0.37, 1.5):
        best = grid[np.argmin(0.5 * (grid - v) ** 2 + t * np.abs(grid))]
        assert sl.soft_threshold(np.array([v]), t)[0] == pytest.approx(best, abs=1e-4)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_proximal_gd_fixed_point_is_the_lasso_solution(lam: float) -> None:
    traj = sl.proximal_gd(lam, steps=CONVERGED_STEPS)
    w = traj.final_weights
    assert_lasso_kkt(w, lam)
    w_ref = sklearn_lasso(lam)
    assert_lasso_kkt(w_ref, lam, atol=1e-6)  # confirms the alpha = lam / (2n) rescaling
    np.testing.assert_allclose(w, w_ref, atol=1e-4)
    np.testing.assert_allclose(sl.lasso_minimizer(lam), w_ref, atol=1e-4)  # what (d), (e) quote


def test_proximal_gd_uses_threshold_mu_lambda() -> None:
    w0 = np.array([0.3, -1.0, 0.01, 0.5, -0.4])
    mu, lam = 0.01, 2.0
    expected = sl.soft_threshold(update_by_loop(w0, mu), mu * lam)
    np.testing.assert_allclose(sl.proximal_gd(lam, w0=w0, mu=mu, steps=1).weights[1],
                               expected, atol=1e-12)


# ----------------------------------------------------------------------------- (f) trimmed L1
def test_trimmed_soft_threshold_leaves_two_largest_unpenalized() -> None:
    v = np.array([3.0, -0.05, 0.5, -2.0, 0.01])
    # by hand: 3 and -2 untouched; 0.5 -> 0.4; -0.05, 0.01 -> 0
    np.testing.assert_allclose(sl.trimmed_soft_threshold(v, 0.1, 3), [3, 0, 0.4, -2, 0])
    rng = np.random.default_rng(2)
    for _ in range(20):
        v = rng.normal(size=5)
        out = sl.trimmed_soft_threshold(v, 0.3, 3)
        top = np.argsort(-np.abs(v))[:2]
        rest = np.setdiff1d(np.arange(5), top)
        np.testing.assert_array_equal(out[top], v[top])
        np.testing.assert_allclose(out[rest], np.sign(v[rest]) * np.maximum(np.abs(v[rest]) - 0.3, 0))


def test_trimmed_soft_threshold_is_exact_prox_by_brute_force() -> None:
    """Prox of t*T: min over penalized sets S of the separable convex prox for that S."""
    def objective(w: np.ndarray, v: np.ndarray, t: float) -> float:
        return 0.5 * np.sum((w - v) ** 2) + t * np.sort(np.abs(w))[:3].sum()

    rng = np.random.default_rng(3)
    t = 0.4
    for _ in range(20):
        v = rng.normal(scale=0.7, size=5)
        candidates = []
        for S in itertools.combinations(range(5), 3):
            w = v.copy()
            idx = list(S)
            w[idx] = np.sign(v[idx]) * np.maximum(np.abs(v[idx]) - t, 0)
            candidates.append(objective(w, v, t))
        ours = objective(sl.trimmed_soft_threshold(v, t, 3), v, t)
        assert ours == pytest.approx(min(candidates), abs=1e-12)


@pytest.mark.parametrize("lam", (1.0, 2.0, 5.0, 10.0))
def test_trimmed_l1_has_no_bias(lam: float) -> None:
    # The two free entries are not shrunk, so the fixed point is the exact 2-sparse
    # interpolant, unlike L1 whose nonzeros are biased towards 0 by lam.
    w_best, _ = best_two_sparse()
    traj = sl.trimmed_l1_proximal_gd(lam, steps=2000)
    np.testing.assert_allclose(traj.final_weights, w_best, atol=1e-8)
    assert np.max(np.abs(sklearn_lasso(lam) - w_best)) > 0.05  # L1 is biased here


# ----------------------------------------------------------------------------- reporting helpers
def test_safe_log10_loss_handles_exact_zero() -> None:
    out = sl.safe_log10_loss(np.array([0.0, 1.0, 100.0]), floor=1e-30)
    np.testing.assert_allclose(out, [-30.0, 0.0, 2.0])


def test_count_nonzero_and_summary() -> None:
    w = np.array([0.0, 1e-5, -2.0, 0.0, 0.5])
    assert sl.count_nonzero(w) == 3 and sl.count_nonzero(w, 1e-3) == 2
    table = sl.summary_markdown([sl.projected_gd(2, steps=5, label="pgd")])
    assert table.count("\n") == 3 and "| pgd |" in table


def test_plot_runs_writes_both_figures(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    runs = [sl.proximal_gd(lam, steps=10) for lam in (0.2, 0.5, 1.0)]
    figs = sl.plot_runs(runs, "test", tmp_path / "x")
    plt.close("all")
    assert len(figs) == 2
    assert (tmp_path / "x_loss.png").stat().st_size > 0
    assert (tmp_path / "x_weights.png").stat().st_size > 0


# ----------------------------------------------------------------------------- measurements
def hand_run(weights: list[list[float]], losses: list[float]) -> sl.Trajectory:
    """A made-up trajectory, so each measurement can be checked by hand."""
    return sl.Trajectory(np.array(weights, dtype=float), np.array(losses, dtype=float), "hand")


def test_supports_changes_and_revivals_by_hand() -> None:
    run = hand_run([[0, 0, 0], [1, 2, 0], [1, 0, 0], [1, 3, 0], [0, 3, 0], [0, 3, 0]],
                   [9, 5, 4, 3, 2, 2])
    assert sl.supports(run) == [(), (1, 2), (1,), (1, 2), (2,), (2,)]
    assert sl.support_changes(run) == [(1, (1, 2)), (2, (1,)), (3, (1, 2)), (4, (2,))]
    assert sl.support_since(run) == 4
    # W2 is 0 after step 2 and back after step 3; the start W0 = 0 never counts
    assert sl.revivals(run) == [(3, 2)]
    assert sl.first_step_nonpositive(run, 1) == 4 and sl.first_step_nonpositive(run, 2) == 2
    assert sl.first_step_nonpositive(run, 3) == 1


def test_gradient_points_are_what_the_projection_keeps() -> None:
    traj = sl.projected_gd(2, steps=30)
    v = sl.gradient_points(traj)
    assert np.isnan(v[0]).all()
    # from W0 = 0 the gradient step is 2 mu X^T y, by hand 0.04 * [8, -15, -3, -5, 6]
    np.testing.assert_allclose(v[1], 0.04 * np.array([8, -15, -3, -5, 6]), atol=1e-12)
    for k in range(1, 31):
        np.testing.assert_allclose(update_by_loop(traj.weights[k - 1], 0.02), v[k], atol=1e-12)
        kept = np.argsort(-np.abs(v[k]))[:2]
        np.testing.assert_array_equal(traj.weights[k][kept], v[k][kept])


def test_largest_jump_loss_rises_and_leading_steps_by_hand() -> None:
    assert sl.largest_jump(np.array([0.0, 1.0, 3.0, 2.0]), 2) == (2.0, 2)
    assert sl.largest_jump(np.array([0.0, 1.0, 3.0, 2.0]), 1) == (1.0, 3)
    w = np.array([[0.0, 0.0], [0.5, -1.0], [0.4, -1.1]])
    assert sl.largest_jump(w, 2) == (1.0, 1)       # 2-D: the largest column jump per step
    for bad in (0, 3, 1.5):
        with pytest.raises(ValueError):
            sl.largest_jump(w, bad)
    run = hand_run([[0]] * 6, [5, 4, 4 + 1e-15, 4.5, 1, 2])
    assert sl.loss_rises(run) == 2                # the 1e-15 rise is round-off
    ref = hand_run([[0]] * 6, [5, 4.5, 4.2, 4.4, 0.5, 0.1])
    assert sl.leading_steps_below(run, ref, 5) == 2
    assert sl.leading_steps_below(ref, hand_run([[0]] * 6, [9] * 6), 5) == 5


def test_still_falling_by_hand() -> None:
    run = hand_run([[0]] * 4, [1.0, 1e-2, 1e-4, 1e-6])
    assert sl.still_falling(run, 1) and sl.still_falling(run, 3)
    flat = hand_run([[0]] * 4, [1.0, 1.3e-30, 1.1e-30, 1.3e-30])    # wobbling at round-off
    assert not sl.still_falling(flat, 1) and not sl.still_falling(flat, 2)
    assert sl.still_falling(flat, 3)                                 # 1 -> 1.3e-30
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError):
            sl.still_falling(run, bad)


def test_support_fits_match_brute_force() -> None:
    fits = sl.support_fits(2)
    assert len(fits) == 10
    support, l, w = min(fits, key=lambda f: f[1])
    w_best, l_best = best_two_sparse()
    np.testing.assert_allclose(w, w_best, atol=1e-10)
    assert support == (2, 5) and l == pytest.approx(l_best, abs=1e-12)
    for s, l, w in fits:
        assert l == pytest.approx(loss_by_loop(w), rel=1e-10, abs=1e-12)
        assert tuple(np.flatnonzero(w) + 1) == s or np.count_nonzero(w) < 2


def test_trend_and_formatting_words() -> None:
    assert sl.trend([1, 2, 3], "up", "down", "neither") == "up"
    assert sl.trend([3, 2, 1], "up", "down", "neither") == "down"
    assert sl.trend([1, 3, 2], "up", "down", "neither") == "neither"
    assert sl.trend([1, 1, 2], "up", "down", "neither") == "neither"
    assert sl.fmt_support((2, 5)) == "{2, 5}" and sl.fmt_support(()) == "–"
    assert sl.fmt_loss(3.4e-30) == "< 1e-20" and sl.fmt_loss(12.0267) == "12.03"
    assert sl.md_table(["a", "b"], [["1", "2"]]) == "| a | b |\n| --- | --- |\n| 1 | 2 |"


def test_findings_word_trends_from_the_values() -> None:
    # (d) chatter of W grows with lambda (about 1.7 mu*lam, see the notebook); given in
    # decreasing order the runs must still be described by how they move as lambda grows
    lams = (2.0, 1.0, 0.5)
    runs = [sl.l1_subgradient_gd(lam) for lam in lams]
    chatter = [np.abs(np.diff(r.weights[-51:], axis=0)).max() for r in runs]
    assert np.all(np.diff(chatter) < 0)             # falls along the list, i.e. grows with lam
    assert "The weight chatter grows with λ" in sl.findings_d(runs, lams)
    assert sl.trend_in([3, 2, 1], [2, 1, 0.5], "x") == "grows with λ"
    assert sl.trend_in([1, 3, 2], [0.5, 1, 2], "neither") == "neither"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call",
    [
        lambda: sl.gradient_descent(steps=-1),
        lambda: sl.gradient_descent(steps=2.5),
        lambda: sl.gradient_descent(mu=0.0),
        lambda: sl.gradient_descent(w0=np.zeros(4)),
        lambda: sl.gradient_descent(X=np.zeros((3, 5)), y=np.zeros(2)),
        lambda: sl.projected_gd(-1),
        lambda: sl.projected_gd(6),
        lambda: sl.project_top_k(np.zeros(5), 6),
        lambda: sl.l1_subgradient_gd(-0.1),
        lambda: sl.proximal_gd(float("nan")),
        lambda: sl.soft_threshold(np.zeros(3), -1.0),
        lambda: sl.trimmed_l1_proximal_gd(1.0, n_penalized=6),
        lambda: sl.trimmed_soft_threshold(np.zeros(5), -0.1, 3),
        lambda: sl.loss(np.zeros(3)),
        lambda: sl.plot_runs([], "empty"),
        lambda: sl.support_fits(6),
    ],
)
def test_bad_input_raises_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
