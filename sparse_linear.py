"""Lab 1: sparse optimization of a tiny linear model, in NumPy.

Objective (a *sum* of squared errors, not a mean):

    L(W) = sum_i (X_i W - y_i)^2 = ||X W - y||^2,    grad L(W) = 2 X^T (X W - y)

Every optimizer below is full-batch gradient descent from W0 = 0 with step mu,
followed by an optional per-step operator:

=====================  =====================================  ==========================
function               per-step update                        minimizes
=====================  =====================================  ==========================
gradient_descent       W - mu grad L                          L
projected_gd           top_k(W - mu grad L)                   L  s.t. ||W||_0 <= k
l1_subgradient_gd      W - mu (grad L + lam sign(W))          L + lam ||W||_1
proximal_gd            soft(W - mu grad L, mu lam)            L + lam ||W||_1
trimmed_l1_proximal_gd soft on the smallest entries only      L + lam T(W)
=====================  =====================================  ==========================

T(W) is the trimmed L1 penalty: the sum of the ``n_penalized`` smallest |W_j|.
Each optimizer returns a :class:`Trajectory` holding the weights after every step
(shape ``(steps + 1, n)``, row 0 is W0) and the loss L at every step, so the
notebook plots and the tests read the same numbers.

Convergence note: grad L is Lipschitz with constant 2 * lambda_max(X^T X) ~= 26.2,
so plain GD is stable for mu < 2 / 26.2 ~= 0.076; mu = 0.02 is well inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np

# ----------------------------------------------------------------------------- data
# Read-only so that no caller can silently change the lab's data set.
X_DATA: np.ndarray = np.array(
    [[1, -2, -1, -1, 1], [2, -1, 2, 0, -2], [-1, 0, 2, 2, 1]], dtype=float
)
Y_DATA: np.ndarray = np.array([7, 1, 1], dtype=float)
X_DATA.flags.writeable = False
Y_DATA.flags.writeable = False
MU: float = 0.02  # learning rate prescribed by the lab
STEPS: int = 200  # number of full-batch steps prescribed by the lab

# log10(L) is drawn as log10(max(L, LOSS_FLOOR)). 1e-32 sits just below float64
# round-off for this data (|y| ~ 7, eps ~ 2e-16, so residual^2 ~ 1e-30), so any
# value at the floor means "L is zero to machine precision".
LOSS_FLOOR: float = 1e-32

StepFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Trajectory:
    """Weights and loss after every step of one run.

    weights: (steps + 1, n) array, row k is W^k (row 0 is the initial point).
    losses:  (steps + 1,) array, losses[k] = L(W^k) (data term only, no penalty).
    label:   human-readable name used in plots and tables.
    """

    weights: np.ndarray
    losses: np.ndarray
    label: str

    @property
    def final_weights(self) -> np.ndarray:
        return self.weights[-1]

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])


# ----------------------------------------------------------------------------- checks
def _check_data(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"need X of shape (m, n) and y of shape (m,), got {X.shape}, {y.shape}")
    return X, y


def _check_weights(w: np.ndarray, n: int) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    return w


def _check_nonnegative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_k(k: int, n: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer in 0..{n}, got {k!r}")


# ----------------------------------------------------------------------------- loss
def loss(w: np.ndarray, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA) -> float:
    """L(W) = sum_i (X_i W - y_i)^2."""
    X, y = _check_data(X, y)
    r = X @ _check_weights(w, X.shape[1]) - y
    return float(r @ r)


def gradient(w: np.ndarray, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA) -> np.ndarray:
    """grad L(W) = 2 sum_i x_i^T (x_i W - y_i) = 2 X^T (X W - y).

    The factor 2 is there because L is a plain sum of squares (no 1/2, no 1/m).
    """
    X, y = _check_data(X, y)
    return 2.0 * X.T @ (X @ _check_weights(w, X.shape[1]) - y)


# ----------------------------------------------------------------------------- operators
def soft_threshold(v: np.ndarray, threshold: float) -> np.ndarray:
    """Proximal operator of threshold * ||.||_1: sign(v) * max(|v| - threshold, 0)."""
    _check_nonnegative("threshold", threshold)
    v = np.asarray(v, dtype=float)
    shrunk = np.maximum(np.abs(v) - threshold, 0.0)
    # np.where instead of sign * shrunk: avoids -0.0 entries in printed tables.
    return np.where(shrunk > 0, np.sign(v) * shrunk, 0.0)


def _largest_indices(v: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |v_j|; ties go to the lower index (stable sort)."""
    return np.argsort(-np.abs(v), kind="stable")[:k]


def project_top_k(w: np.ndarray, k: int) -> np.ndarray:
    """Euclidean projection onto {||W||_0 <= k}: keep the k largest-magnitude entries.

    Ties in |w| are broken towards the lower index so that runs are reproducible.
    """
    w = np.asarray(w, dtype=float)
    _check_k(k, w.size)
    out = np.zeros_like(w)
    keep = _largest_indices(w, k)
    out[keep] = w[keep]
    return out


def trimmed_soft_threshold(v: np.ndarray, threshold: float, n_penalized: int) -> np.ndarray:
    """Proximal operator of threshold * T(.), T = sum of the n_penalized smallest |v_j|.

    Soft-thresholds the n_penalized smallest-magnitude entries of v and leaves the
    others untouched. This is the exact prox, not a heuristic: for a fixed penalized
    set S the prox cost is sum_{j in S} h(|v_j|) with h increasing (Huber-like), so
    the best S is the set of smallest |v_j|.
    """
    v = np.asarray(v, dtype=float)
    _check_k(n_penalized, v.size)
    _check_nonnegative("threshold", threshold)
    out = v.copy()
    free = _largest_indices(v, v.size - n_penalized)
    penalized = np.setdiff1d(np.arange(v.size), free)
    out[penalized] = soft_threshold(v[penalized], threshold)
    return out


# ----------------------------------------------------------------------------- optimizers
def _run(
    post: StepFn,
    *,
    X: np.ndarray,
    y: np.ndarray,
    w0: np.ndarray | None,
    mu: float,
    steps: int,
    label: str,
    extra_grad: StepFn | None = None,
) -> Trajectory:
    """Shared loop: W <- post(W - mu * (grad L(W) + extra_grad(W)))."""
    X, y = _check_data(X, y)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not (math.isfinite(mu) and mu > 0):
        raise ValueError(f"mu must be a finite number > 0, got {mu!r}")
    n = X.shape[1]
    w = np.zeros(n) if w0 is None else _check_weights(w0, n).copy()
    weights = np.empty((steps + 1, n))
    weights[0] = w
    for k in range(steps):
        g = gradient(w, X, y)
        if extra_grad is not None:
            g = g + extra_grad(w)
        w = post(w - mu * g)
        weights[k + 1] = w
    residuals = weights @ X.T - y
    return Trajectory(weights, np.sum(residuals**2, axis=1), label)


def gradient_descent(
    *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA, w0: np.ndarray | None = None,
    mu: float = MU, steps: int = STEPS, label: str = "GD",
) -> Trajectory:
    """Plain full-batch GD on L. From W0 = 0 it stays in the row space of X, so its
    limit is the minimum-norm least-squares solution pinv(X) y."""
    return _run(lambda v: v, X=X, y=y, w0=w0, mu=mu, steps=steps, label=label)


def projected_gd(
    k: int = 2, *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA,
    w0: np.ndarray | None = None, mu: float = MU, steps: int = STEPS,
    label: str = "projected GD",
) -> Trajectory:
    """GD followed by projection onto ||W||_0 <= k (iterative hard thresholding)."""
    _check_k(k, np.asarray(X).shape[-1])
    return _run(lambda v: project_top_k(v, k), X=X, y=y, w0=w0, mu=mu, steps=steps, label=label)


def l1_subgradient_gd(
    lam: float, *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA,
    w0: np.ndarray | None = None, mu: float = MU, steps: int = STEPS,
    label: str | None = None,
) -> Trajectory:
    """(Sub)gradient descent on L + lam ||W||_1, using sign(0) = 0 as the subgradient.

    With a constant step the penalty term moves every nonzero weight by mu*lam per
    step, so small weights chatter around 0 instead of landing exactly on it.
    """
    _check_nonnegative("lam", lam)
    return _run(
        lambda v: v, X=X, y=y, w0=w0, mu=mu, steps=steps,
        label=label or f"L1 subgradient, lam={lam:g}", extra_grad=lambda w: lam * np.sign(w),
    )


def proximal_gd(
    lam: float, *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA,
    w0: np.ndarray | None = None, mu: float = MU, steps: int = STEPS,
    label: str | None = None,
) -> Trajectory:
    """Proximal GD (ISTA) on L + lam ||W||_1: soft threshold mu*lam after each GD step."""
    _check_nonnegative("lam", lam)
    return _run(
        lambda v: soft_threshold(v, mu * lam), X=X, y=y, w0=w0, mu=mu, steps=steps,
        label=label or f"proximal L1, threshold={mu * lam:g}",
    )


def trimmed_l1_proximal_gd(
    lam: float, n_penalized: int = 3, *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA,
    w0: np.ndarray | None = None, mu: float = MU, steps: int = STEPS,
    label: str | None = None,
) -> Trajectory:
    """Proximal GD on L + lam T(W), T = L1 norm of the n_penalized smallest |W_j|.

    The largest n - n_penalized entries are never shrunk, which removes the L1 "bias"
    on the weights that the model actually uses.
    """
    _check_nonnegative("lam", lam)
    _check_k(n_penalized, np.asarray(X).shape[-1])
    return _run(
        lambda v: trimmed_soft_threshold(v, mu * lam, n_penalized),
        X=X, y=y, w0=w0, mu=mu, steps=steps,
        label=label or f"trimmed L1, threshold={mu * lam:g}",
    )


# ----------------------------------------------------------------------------- reporting
def count_nonzero(w: np.ndarray, tol: float = 0.0) -> int:
    """||W||_0 counted as #{j : |w_j| > tol}; tol = 0 counts exact nonzeros."""
    return int(np.sum(np.abs(np.asarray(w)) > tol))


def summary_markdown(runs: Sequence[Trajectory], tol: float = 1e-3) -> str:
    """Markdown table: final W, final L and ||W||_0 (exact, and with |w| > tol) per run."""
    lines = [
        # no "|" inside cells: it would split the markdown column
        f"| run | final W | final L | ‖W‖0 (exact) | ‖W‖0 (abs(w) > {tol:g}) |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        w = ", ".join(f"{v:+.4f}" for v in r.final_weights)
        lines.append(
            f"| {r.label} | [{w}] | {r.final_loss:.3e} | {count_nonzero(r.final_weights)} "
            f"| {count_nonzero(r.final_weights, tol)} |"
        )
    return "\n".join(lines) + "\n"


def safe_log10_loss(losses: np.ndarray, floor: float = LOSS_FLOOR) -> np.ndarray:
    """log10(max(L, floor)): finite even where L is exactly 0."""
    return np.log10(np.maximum(np.asarray(losses, dtype=float), floor))


def _grid(n_runs: int, title: str) -> tuple[plt.Figure, np.ndarray]:
    """One axes for a single run, else a 2-column grid (4 runs -> the 2x2 grid of d/e/f)."""
    if n_runs == 1:
        fig, axes = plt.subplots(1, 1, figsize=(6.4, 4.0), squeeze=False)
        fig.suptitle(title)
        return fig, axes
    nrows = math.ceil(n_runs / 2)
    fig, axes = plt.subplots(nrows, 2, figsize=(10.0, 3.4 * nrows), squeeze=False)
    fig.suptitle(title)
    for ax in axes.flat[n_runs:]:  # unused cells of an odd-sized grid
        ax.set_visible(False)
    return fig, axes


def _plot_loss(ax: plt.Axes, run: Trajectory, floor: float, **kw) -> None:
    steps = np.arange(run.losses.size)
    ax.plot(steps, safe_log10_loss(run.losses, floor), **kw)
    zero = run.losses == 0.0
    if zero.any():  # exact zeros are drawn at the floor and marked, not hidden
        ax.plot(steps[zero], np.full(zero.sum(), math.log10(floor)), "rv", ms=4,
                label="L = 0 exactly (drawn at floor)")


def plot_runs(
    runs: Sequence[Trajectory], title: str, out_prefix: str | Path | None = None,
    floor: float = LOSS_FLOOR,
) -> tuple[plt.Figure, plt.Figure]:
    """Draw log10(L) vs step and each W_j vs step, one panel per run (2-column grid).

    Saves ``<out_prefix>_loss.png`` and ``<out_prefix>_weights.png`` when out_prefix
    is given. Returns the two figures (the notebook shows them inline).
    """
    if not runs:
        raise ValueError("need at least one run to plot")
    fig_l, axes_l = _grid(len(runs), f"{title}: log10 L vs step")
    fig_w, axes_w = _grid(len(runs), f"{title}: weights vs step")
    for run, ax_l, ax_w in zip(runs, axes_l.flat, axes_w.flat):
        # a single run is already named by the figure title
        panel = run.label if len(runs) > 1 else ""
        _plot_loss(ax_l, run, floor, color="C0")
        ax_l.set(title=panel, xlabel="step", ylabel="log10 L")
        ax_l.grid(alpha=0.3)
        if (run.losses == 0.0).any():
            ax_l.legend(fontsize=8)
        for j in range(run.weights.shape[1]):
            ax_w.plot(run.weights[:, j], label=f"W[{j + 1}]")
        ax_w.axhline(0.0, color="k", lw=0.5)
        ax_w.set(title=panel, xlabel="step", ylabel="weight value")
        ax_w.grid(alpha=0.3)
        ax_w.legend(fontsize=8, ncols=5, loc="best")
    for fig in (fig_l, fig_w):
        fig.tight_layout()
    if out_prefix is not None:
        _save(fig_l, f"{out_prefix}_loss.png")
        _save(fig_w, f"{out_prefix}_weights.png")
    return fig_l, fig_w


def plot_early_comparison(
    reference: Trajectory, runs: Sequence[Trajectory], n_steps: int,
    out_path: str | Path | None = None, floor: float = LOSS_FLOOR,
) -> plt.Figure:
    """First n_steps of each run (solid) against a reference run (dashed), one
    weights panel per run plus one shared log10 L panel."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps!r}")
    fig, axes = _grid(len(runs) + 1, f"first {n_steps} steps: solid = run, dashed = {reference.label}")
    s = slice(0, n_steps + 1)
    for ax in axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)
    loss_ax = axes.flat[0]
    for i, run in enumerate([reference, *runs]):
        short = Trajectory(run.weights[s], run.losses[s], run.label)
        _plot_loss(loss_ax, short, floor, color=f"C{i}", ls="--" if i == 0 else "-",
                   label=run.label)
    loss_ax.set(title="log10 L", xlabel="step", ylabel="log10 L")
    loss_ax.legend(fontsize=7)
    loss_ax.grid(alpha=0.3)
    for run, ax in zip(runs, axes.flat[1:]):
        for j in range(run.weights.shape[1]):
            ax.plot(reference.weights[s, j], color=f"C{j}", ls="--", lw=1)
            ax.plot(run.weights[s, j], color=f"C{j}", label=f"W[{j + 1}]")
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set(title=run.label, xlabel="step", ylabel="weight value")
        ax.legend(fontsize=7, ncols=5)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if out_path is not None:
        _save(fig, out_path)
    return fig


def _save(fig: plt.Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
