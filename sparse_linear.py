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

The *measurements* (supports, zeros that come back, chatter, ...) and the *findings_c..f*
functions turn trajectories into the tables and sentences behind the discussion of
(c)-(f); the notebook shows them and writes them to report/lab1_summary.md, which the
report places under each question.

Convergence note: grad L is Lipschitz with constant 2 * lambda_max(X^T X) ~= 26.2,
so plain GD is stable for mu < 2 / 26.2 ~= 0.076; mu = 0.02 is well inside.
"""

from __future__ import annotations

import functools
import itertools
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


# ----------------------------------------------------------------------------- measurements
# What the Lab 1 discussion quotes is measured here, once, so that the notebook, the
# summary file (report/lab1_summary.md) and the PDF all carry the same numbers.
# Weights are numbered 1..n as in the assignment (W1..W5).
def supports(run: Trajectory) -> list[tuple[int, ...]]:
    """Support of W^k for k = 0..steps: the numbers (1-based) of its exact nonzeros."""
    return [tuple(int(j) + 1 for j in np.flatnonzero(w)) for w in run.weights]


def support_changes(run: Trajectory) -> list[tuple[int, tuple[int, ...]]]:
    """(step k, support of W^k) for every step whose support differs from step k - 1's."""
    sup = supports(run)
    return [(k, sup[k]) for k in range(1, len(sup)) if sup[k] != sup[k - 1]]


def support_since(run: Trajectory) -> int:
    """First step from which the support stays as it is at the end (0: it never changes)."""
    changes = support_changes(run)
    return changes[-1][0] if changes else 0


def revivals(run: Trajectory) -> list[tuple[int, int]]:
    """(step k, weight j) where W_j^{k-1} is exactly 0 and W_j^k is not, for k >= 2.

    Step 1 is left out: W^0 = 0 is the starting point, not a zero the method produced.
    """
    w = run.weights
    ks, js = np.nonzero((w[1:-1] == 0) & (w[2:] != 0))
    return [(int(k) + 2, int(j) + 1) for k, j in zip(ks, js)]


def gradient_points(
    run: Trajectory, *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA, mu: float = MU,
) -> np.ndarray:
    """V^k = W^{k-1} - mu grad L(W^{k-1}): the point that the per-step operator
    (projection, soft threshold) turns into W^k. Row k holds V^k; row 0 is NaN."""
    v = np.full_like(run.weights, np.nan)
    v[1:] = [w - mu * gradient(w, X, y) for w in run.weights[:-1]]
    return v


def first_step_nonpositive(run: Trajectory, weight: int) -> int | None:
    """First step k >= 1 with W_weight^k <= 0 (weight is 1-based), None if there is none."""
    hit = np.flatnonzero(run.weights[1:, weight - 1] <= 0)
    return int(hit[0]) + 1 if hit.size else None


def largest_jump(series: np.ndarray, last: int) -> tuple[float, int]:
    """Largest |s^k - s^(k-1)| over the last ``last`` steps of a per-step series, and its k.

    ``series`` has one row per step (k = 0..steps); for a 2-D series (weights) the jump of
    a step is the largest over its columns. Used for the chatter of W, L and log10 L.
    """
    s = np.asarray(series, dtype=float).reshape(len(series), -1)
    if isinstance(last, bool) or not isinstance(last, (int, np.integer)) or not 1 <= last < len(s):
        raise ValueError(f"last must be an integer in 1..{len(s) - 1}, got {last!r}")
    jumps = np.abs(np.diff(s, axis=0)).max(axis=1)[-last:]
    i = int(np.argmax(jumps))
    return float(jumps[i]), len(s) - last + i


def loss_rises(run: Trajectory, tol: float = 1e-12) -> int:
    """Number of steps at which L goes up by more than ``tol`` (tol absorbs round-off)."""
    return int(np.sum(np.diff(run.losses) > tol))


def leading_steps_below(run: Trajectory, ref: Trajectory, n: int) -> int:
    """How many of the steps 1, 2, ..., n in a row have run's L below ref's L."""
    below = run.losses[1:n + 1] < ref.losses[1:n + 1]
    return int(below.size if below.all() else np.argmin(below))


def support_fits(
    k: int, *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA,
) -> list[tuple[tuple[int, ...], float, np.ndarray]]:
    """Brute force over all supports of size k: (support, lowest L on it, its W).

    Each support is solved by least squares on its columns, independently of any
    optimizer, which makes it the reference for projected GD and trimmed L1.
    """
    X, y = _check_data(X, y)
    _check_k(k, X.shape[1])
    fits = []
    for s in itertools.combinations(range(X.shape[1]), k):
        w = np.zeros(X.shape[1])
        w[list(s)] = np.linalg.lstsq(X[:, list(s)], y, rcond=None)[0]
        fits.append((tuple(j + 1 for j in s), loss(w, X, y), w))
    return fits


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


# ----------------------------------------------------------------------------- findings
# Markdown for report/lab1_summary.md: per question, the tables behind the discussion and
# its quantitative sentences. Every number is formatted from a measurement above and every
# trend word is chosen from the values, so the text cannot drift from the run.
TAIL: int = 50            # (d), (e): chatter and jitter are judged over the last TAIL steps
RISE_TOL: float = 1e-12   # an increase of L below this is round-off, not a rise
LONG_STEPS: int = 2000    # a run continued this far shows what 200 steps did not reach
LASSO_STEPS: int = 20_000  # proximal GD this long is the Lasso minimizer (see the tests)
PLATEAU_STEPS: int = 10   # (f): L still falling = more than tenfold over the last 10 steps


@functools.lru_cache(maxsize=None)
def lasso_minimizer(lam: float, mu: float = MU) -> np.ndarray:
    """Minimizer of L + lam ||W||_1 on the lab's data: proximal GD run for LASSO_STEPS
    steps (tests/test_sparse_linear.py checks it against scikit-learn and the KKT
    conditions). Cached, because (d), (e) and the notebook all compare against it."""
    w = proximal_gd(lam, mu=mu, steps=LASSO_STEPS).final_weights.copy()
    w.flags.writeable = False   # shared by every caller through the cache
    return w


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Markdown table; cells must not contain "|"."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in lines)


def fmt_support(s: Sequence[int]) -> str:
    """{2, 5}: the numbers of the nonzero weights ("–" for none)."""
    return "{" + ", ".join(str(j) for j in s) + "}" if len(s) else "–"


def fmt_loss(value: float) -> str:
    """L with 4 significant digits; values at round-off level (< 1e-20) as "< 1e-20"."""
    return "< 1e-20" if value < 1e-20 else f"{value:.4g}"


def fmt_all(values: Sequence, spec: str = "") -> str:
    """"a, b, c" with each value formatted by ``spec``."""
    return ", ".join(format(v, spec) for v in values)


def trend(values: Sequence[float], up: str, down: str, neither: str) -> str:
    """``up`` if the values rise strictly, ``down`` if they fall strictly, else ``neither``."""
    d = np.diff(np.asarray(values, dtype=float))
    return up if np.all(d > 0) else down if np.all(d < 0) else neither


def trend_in(values: Sequence[float], lams: Sequence[float], neither: str) -> str:
    """How ``values`` move as lambda grows ("grows with λ", "shrinks as λ grows" or
    ``neither``), whatever order the runs were given in."""
    ordered = [v for _, v in sorted(zip(lams, values))]
    return trend(ordered, "grows with λ", "shrinks as λ grows", neither)


def with_lam(values: Sequence, lams: Sequence[float]) -> str:
    """"a, b, c, d for λ = 0.2, 0.5, 1, 2" (values already formatted)."""
    return f"{fmt_all(values)} for λ = {fmt_all(lams, 'g')}"


def section(tables: Sequence[tuple[str, str]], sentences: Sequence[str]) -> str:
    """Captioned tables, then the sentences as a bullet list."""
    parts = [f"*Table: {title}.*\n\n{body}" for title, body in tables]
    return "\n\n".join(parts + ["\n".join(f"- {s}" for s in sentences)])


# --- (c)
def findings_c(run: Trajectory, *, X: np.ndarray = X_DATA, y: np.ndarray = Y_DATA,
               mu: float = MU) -> str:
    """(c) projected GD: all 2-sparse supports by brute force, the gradient steps up to
    the support switch (before the projection), and what they show."""
    fits = support_fits(2, X=X, y=y)
    v = gradient_points(run, X=X, y=y, mu=mu)
    sup, switch = supports(run), support_since(run)
    cols = sorted(set(sup[switch - 1]) | set(sup[switch]))   # the weights that take part
    best = min(fits, key=lambda f: f[1])[0]
    fit_rows = [[fmt_support(s), fmt_loss(l) + (" (best)" if s == best else "")]
                for s, l, _ in fits]
    step_rows = [[str(k), *(f"{v[k, j - 1]:+.4f}" for j in cols), fmt_support(sup[k]),
                  fmt_loss(run.losses[k])] for k in range(1, switch + 2)]
    return section([
        (f"(c) least squares on each of the {len(fits)} supports with two nonzeros "
         "(brute force)", md_table(["support", "lowest L"], fit_rows)),
        (f"(c) W after the gradient step and before the projection, steps 1–{switch + 1}; "
         "the projection keeps the two largest in magnitude",
         md_table(["step", *(f"W{j}" for j in cols), "support kept",
                   "L after the projection"], step_rows)),
    ], _said_c(run, v, fits))


def _said_c(run: Trajectory, v: np.ndarray, fits: list) -> list[str]:
    """Sentences of (c): which weight leaves, which enters, and why at that step."""
    sup, switch = supports(run), support_since(run)
    old, new = sup[switch - 1], sup[switch]
    if len(set(old) - set(new)) != 1:
        raise ValueError(f"expected one weight to swap at step {switch}: {old} -> {new}")
    (out,), (inn,), (stays,) = set(old) - set(new), set(new) - set(old), set(old) & set(new)
    w_out = np.abs(run.weights[1:switch, out - 1])          # steps 1 .. switch-1
    peak = int(np.argmax(w_out)) + 1
    shape = f"grows to {w_out[peak - 1]:.4f} at step {peak}" + (
        " and then shrinks" if peak < switch - 1 else "")
    other = trend(np.abs(run.weights[1:switch, stays - 1]), "grows in magnitude at every step",
                  "shrinks in magnitude at every step", "changes")
    v_in = np.abs(v[1:switch, inn - 1])
    best = min(fits, key=lambda f: f[1])
    return [
        f"Steps 1–{switch - 1} keep {fmt_support(old)}: $W_{out}$ {shape}, while $W_{stays}$ "
        f"{other}.",
        f"$W_{inn}$ is set to 0 by each of these projections. Before the projection it lies "
        f"between {v_in.min():.4f} and {v_in.max():.4f}, one gradient step away from 0 every "
        f"time, so nothing builds up in $W_{inn}$ from step to step.",
        f"At step {switch}, $|W_{out}|$ = {abs(v[switch, out - 1]):.4f} before the projection "
        f"falls below $|W_{inn}|$ = {abs(v[switch, inn - 1]):.4f}, so the projection keeps "
        f"{fmt_support(new)}; the support stays {fmt_support(new)} from step {switch} to "
        f"step {len(sup) - 1}.",
        f"On {fmt_support(old)} L falls from {run.losses[0]:.0f} to "
        f"{run.losses[switch - 1]:.2f} (steps 0–{switch - 1}); no W on {fmt_support(old)} "
        f"gets below L = {dict((s, l) for s, l, _ in fits)[old]:.4f}, while "
        f"{fmt_support(best[0])}, the best of the {len(fits)} supports, reaches L "
        f"{fmt_loss(best[1])}.",
    ]


# --- (d)
def measure_d(runs: Sequence[Trajectory], lams: Sequence[float], *, mu: float = MU,
              tail: int = TAIL) -> dict:
    """What (d) quotes, per lambda (runs on the lab's data, one per lambda)."""
    w1 = [first_step_nonpositive(r, 1) for r in runs]
    return {
        "lams": list(lams), "mu": mu, "tail": tail, "steps": runs[0].losses.size - 1,
        "final": [r.final_loss for r in runs],
        "zeros": [r.weights.shape[1] - count_nonzero(r.final_weights) for r in runs],
        "above": [count_nonzero(r.final_weights, 1e-3) for r in runs],
        "w1": w1,
        # a run that has not removed W1 by its last step is continued, so each lambda has one
        "w1_all": [k if k is not None else first_step_nonpositive(
            l1_subgradient_gd(lam, mu=mu, steps=LONG_STEPS), 1) for k, lam in zip(w1, lams)],
        "lasso": [np.abs(r.final_weights - lasso_minimizer(lam, mu)).max()
                  for r, lam in zip(runs, lams)],
        "chatter": [largest_jump(r.weights, tail)[0] for r in runs],
        "jitter": [largest_jump(safe_log10_loss(r.losses), tail) for r in runs],
        "ljump": [largest_jump(r.losses, tail)[0] for r in runs],
        "rises": [loss_rises(r, RISE_TOL) for r in runs],
    }


def findings_d(runs: Sequence[Trajectory], lams: Sequence[float], *, mu: float = MU,
               tail: int = TAIL) -> str:
    """(d) L1 by subgradient descent: zeros, distance to the Lasso minimizer, removal of
    W1, chatter of W, jitter of L and log L."""
    m = measure_d(runs, lams, mu=mu, tail=tail)
    rows1 = [[f"{lam:g}", f"{m['final'][i]:.4f}", str(m["zeros"][i]), str(m["above"][i]),
              str(m["w1_all"][i]) + ("" if m["w1"][i] is not None else f" ({LONG_STEPS}-step run)"),
              f"{lam * m['w1_all'][i]:.1f}", f"{m['lasso'][i]:.4f}"]
             for i, lam in enumerate(lams)]
    rows2 = [[f"{lam:g}", f"{mu * lam:g}", f"{m['chatter'][i]:.4f}",
              f"{m['chatter'][i] / (mu * lam):.2f}", f"{m['jitter'][i][0]:.3f}",
              str(m["jitter"][i][1]), f"{m['ljump'][i]:.4f}", str(m["rises"][i])]
             for i, lam in enumerate(lams)]
    s = m["steps"]
    return section([
        (f"(d) state at step {s}; the Lasso minimizer is proximal GD run for {LASSO_STEPS} "
         "steps", md_table(["λ", "final L", "exact zeros", "nonzeros with abs(w) > 0.001",
                            "step W1 first ≤ 0", "λ × that step",
                            "largest distance to Lasso minimizer"], rows1)),
        (f"(d) chatter over the last {tail} steps (steps {s - tail + 1}–{s}); L rises: steps "
         f"(of all {s}) where L goes up by more than {RISE_TOL:g}",
         md_table(["λ", "μλ", "largest step of W", "÷ μλ", "largest jump of log10 L",
                   "at step", "largest jump of L", "L rises"], rows2)),
    ], _said_d(m))


def _said_d(m: dict) -> list[str]:
    """Sentences of (d), worded from the measurements ``m`` of measure_d."""
    lams, mu = m["lams"], m["mu"]
    steady = "does not grow steadily with λ"
    jit = [j for j, _ in m["jitter"]]
    i = int(np.argmax(jit))
    # name W1's first zero when the largest jump comes with it (same step or the next)
    after = None if m["w1"][i] is None else m["jitter"][i][1] - m["w1"][i]
    near = {0: ", the step at which $W_1$ first reaches 0",
            1: ", one step after $W_1$ first reaches 0"}.get(after, "")
    ratio = [round(lam * k, 6) for lam, k in zip(lams, m["w1_all"])]  # 0.2 * 398 = 79.6
    long = [f"{lam:g}" for lam, k in zip(lams, m["w1"]) if k is None]
    ratios = [c / (mu * lam) for c, lam in zip(m["chatter"], lams)]
    return [
        (f"No run has an exact zero at step {m['steps']}." if not any(m["zeros"]) else
         f"Exact zeros at step {m['steps']}: {with_lam(m['zeros'], lams)}."),
        f"The weight chatter {trend_in(m['chatter'], lams, steady)}: the largest step of any "
        f"weight over the last {m['tail']} steps is "
        f"{with_lam([f'{c:.4f}' for c in m['chatter']], lams)}, between {min(ratios):.2f} "
        f"and {max(ratios):.2f} times μλ.",
        f"The jitter of $\\log L$ {trend_in(jit, lams, 'does not grow with λ')}: its "
        f"largest jump over the last {m['tail']} steps is {fmt_all(jit, '.3f')} (in "
        f"$\\log_{{10}} L$), largest at λ = {lams[i]:g} (step {m['jitter'][i][1]}{near}).",
        f"A jump of $\\log L$ is a change of L relative to L: the largest jump of L itself "
        f"{trend_in(m['ljump'], lams, steady)} ({fmt_all(m['ljump'], '.4f')}), but so does L, "
        f"whose final value {trend_in(m['final'], lams, steady)} ({fmt_all(m['final'], '.4f')}).",
        f"$W_1$ first reaches 0 at step {with_lam(m['w1_all'], lams)}"
        + (f" (λ = {', '.join(long)} from a {LONG_STEPS}-step run)" if long else "")
        + f"; λ × step lies between {min(ratio):g} and {max(ratio):g}"
        + (", so the time to remove $W_1$ scales like 1/λ." if max(ratio) < 1.25 * min(ratio)
           else "."),
    ]


# --- (e)
def measure_e(runs: Sequence[Trajectory], sub: Sequence[Trajectory], lams: Sequence[float],
              *, mu: float = MU, tail: int = TAIL) -> dict:
    """What (e) quotes: proximal GD (``runs``) against (d) (``sub``), same lambdas."""
    return {
        "thr": [mu * lam for lam in lams], "tail": tail, "steps": runs[0].losses.size - 1,
        "final": [r.final_loss for r in runs], "final_d": [s.final_loss for s in sub],
        "nnz": [count_nonzero(r.final_weights) for r in runs],
        "support": [supports(r)[-1] for r in runs],
        "since": [support_since(r) for r in runs],
        "since_long": [support_since(proximal_gd(lam, mu=mu, steps=LONG_STEPS)) for lam in lams],
        "lasso": [np.abs(r.final_weights - lasso_minimizer(lam, mu)).max()
                  for r, lam in zip(runs, lams)],
        "gap": [np.abs(r.weights - s.weights).max() for r, s in zip(runs, sub)],
        "rises": [loss_rises(r, RISE_TOL) for r in runs],
        "rises_d": [loss_rises(s, RISE_TOL) for s in sub],
        "moves": [largest_jump(r.weights, tail)[0] for r in runs],
        # the first zero that comes back in each run, with its gradient step at that moment
        "back": [[(k, j, abs(gradient_points(r, mu=mu)[k, j - 1])) for k, j in revivals(r)][:1]
                 for r in runs],
    }


def _change_rows(thr: float, run: Trajectory) -> list[list[str]]:
    """Rows of the (e) support table: every step at which the support of one run changes."""
    rows, prev = [], ()
    for k, s in support_changes(run):
        rows.append([f"{thr:g}", str(k), fmt_support(s), fmt_support(sorted(set(prev) - set(s))),
                     fmt_support(sorted(set(s) - set(prev)))])
        prev = s
    return rows


def findings_e(runs: Sequence[Trajectory], sub: Sequence[Trajectory], lams: Sequence[float],
               *, mu: float = MU, tail: int = TAIL) -> str:
    """(e) L1 by proximal GD against (d): support changes, zeros that come back,
    smoothness of L, distance to (d) and to the Lasso minimizer."""
    m = measure_e(runs, sub, lams, mu=mu, tail=tail)
    changes = [row for t, r in zip(m["thr"], runs) for row in _change_rows(t, r)]
    rows = [[f"{t:g}", f"{m['final'][i]:.4f}", f"{m['final_d'][i]:.4f}", str(m["nnz"][i]),
             str(m["since"][i]), f"{m['lasso'][i]:.1e}", f"{m['gap'][i]:.4f}",
             f"{m['rises'][i]} / {m['rises_d'][i]}", f"{m['moves'][i]:.1e}"]
            for i, t in enumerate(m["thr"])]
    return section([
        ("(e) every step at which the support changes", md_table(
            ["μλ", "step", "support after the step", "set to 0", "non-zero (again)"], changes)),
        (f"(e) against (d) at the same λ after {m['steps']} steps; L rises: steps where L goes "
         f"up by more than {RISE_TOL:g}",
         md_table(["μλ", "final L", "(d) final L", "exact nonzeros", "support final from step",
                   "distance to Lasso min.", "largest abs(W(e) − W(d))", "L rises (e) / (d)",
                   f"largest step, last {tail}"], rows)),
    ], _said_e(m))


def _said_e(m: dict) -> list[str]:
    """Sentences of (e), worded from the measurements ``m`` of measure_e."""
    thr = m["thr"]
    back: dict[tuple[int, int], list[tuple[float, float]]] = {}   # (step, weight) -> runs
    for t, b in zip(thr, m["back"]):
        for k, j, v in b:        # at most one: the first zero that comes back
            back.setdefault((k, j), []).append((t, v))
    kept = [t for t, b in zip(thr, m["back"]) if not b]
    said = [f"At μλ = {fmt_all([t for t, _ in ts], 'g')}, $W_{j}$ is 0 after step {k - 1} and "
            f"non-zero again after step {k}: its gradient step there, "
            f"{fmt_all([v for _, v in ts], '.4f')}, is larger than μλ."
            for (k, j), ts in back.items()]
    if kept:
        said.append(f"At μλ = {fmt_all(kept, 'g')} no weight that was set to 0 becomes "
                    "non-zero again.")
    said += [
        f"L rises at {fmt_all(m['rises'])} of the {m['steps']} steps for μλ = "
        f"{fmt_all(thr, 'g')}, against {fmt_all(m['rises_d'])} steps of (d) at the same λ.",
        f"The (e) weights stay within {fmt_all(m['gap'], '.4f')} of the (d) weights at every "
        f"step (at most {max(g / t for g, t in zip(m['gap'], thr)):.1f} μλ); the final L of (d) "
        + ("is higher at every λ." if all(d > e for d, e in zip(m["final_d"], m["final"]))
           else "is not higher at every λ."),
    ]
    two = [i for i, n in enumerate(m["nnz"]) if n == 2]
    more = [i for i, n in enumerate(m["nnz"]) if n > 2]
    if two:
        said.append(f"μλ = {fmt_all([thr[i] for i in two], 'g')} end with exactly 2 nonzeros, "
                    f"{' / '.join(sorted({fmt_support(m['support'][i]) for i in two}))}, from "
                    f"step {fmt_all([m['since'][i] for i in two])}, within "
                    f"{max(m['lasso'][i] for i in two):.0e} of the Lasso minimizer.")
    for i in more:
        said.append(f"μλ = {thr[i]:g} still has {m['nnz'][i]} nonzeros at step {m['steps']}; "
                    f"run for {LONG_STEPS} steps, its support stops changing at step "
                    f"{m['since_long'][i]}.")
    still = [thr[i] for i, v in enumerate(m["moves"]) if v < 1e-8]
    if still:
        said.append(f"At μλ = {fmt_all(still, 'g')} the iterate has stopped: no weight moves "
                    f"by more than 1e-08 per step over the last {m['tail']} steps.")
    return said


# --- (f)
def findings_f(runs: Sequence[Trajectory], ref: Trajectory, lams: Sequence[float],
               l1_final: dict[float, float], *, mu: float = MU, n: int = 20) -> str:
    """(f) trimmed L1 (one run per lambda) against projected GD (``ref``) over the first
    ``n`` steps, and at the end against L1. ``l1_final`` maps a threshold mu*lam (rounded
    to 6 digits) to the final L of the (e) run with that threshold."""
    head = ["step", "projected GD", *(f"trimmed λ = {lam:g}" for lam in lams)]
    sups = [supports(r) for r in (ref, *runs)]
    sup_rows = [[str(k), *(fmt_support(s[k]) for s in sups)] for k in range(1, n + 1)]
    loss_rows = [[str(k), *(f"{r.losses[k]:.4g}" for r in (ref, *runs))] for k in range(n + 1)]
    end_rows = [[f"{lam:g}", f"{mu * lam:g}", fmt_loss(r.final_loss),
                 str(count_nonzero(r.final_weights)), str(first_step_nonpositive(r, 1)),
                 str(int(np.argmax(r.losses < 1e-6))) if (r.losses < 1e-6).any() else "–",
                 f"{l1_final[round(mu * lam, 6)]:.4f}" if round(mu * lam, 6) in l1_final else "–"]
                for lam, r in zip(lams, runs)]
    return section([
        (f"(f) support (nonzero weights) over the first {n} steps", md_table(head, sup_rows)),
        (f"(f) L over the first {n} steps", md_table(head, loss_rows)),
        (f"(f) trimmed ℓ1 after {runs[0].losses.size - 1} steps",
         md_table(["λ", "μλ", "final L", "exact nonzeros", "step W1 first ≤ 0",
                   "first step L < 1e-6", "ℓ1 (e) final L, same μλ"], end_rows)),
    ], _said_f(runs, ref, lams, l1_final, mu, n))


def still_falling(run: Trajectory, last: int = PLATEAU_STEPS) -> bool:
    """True if L fell more than tenfold over the last ``last`` steps. A run whose L has
    levelled off at round-off only wobbles there, so it stays within a factor 10."""
    if isinstance(last, bool) or not isinstance(last, (int, np.integer)) \
            or not 1 <= last < run.losses.size:
        raise ValueError(f"last must be an integer in 1..{run.losses.size - 1}, got {last!r}")
    return bool(run.losses[-1] < run.losses[-1 - last] / 10)


def _per_step(losses: np.ndarray, a: int, b: int) -> float:
    """Average factor by which L shrinks per step from step a to step b."""
    return float((losses[b] / losses[a]) ** (1 / (b - a)))


def _said_f(runs: Sequence[Trajectory], ref: Trajectory, lams: Sequence[float],
            l1_final: dict[float, float], mu: float, n: int) -> list[str]:
    """Sentences of (f): projected GD's loss, how long trimmed L1 stays below it, W1's
    removal, the overshoot of the kept weights, and where the runs end."""
    sup, switch = supports(ref), support_since(ref)
    before, after = _per_step(ref.losses, 0, switch - 1), _per_step(ref.losses, switch - 1, n)
    falls = "falls at every one" if np.all(np.diff(ref.losses[:n + 1]) < 0) else \
        "does not fall at every one"
    best = min(support_fits(2), key=lambda f: f[1])[2]
    big, small = sorted(np.flatnonzero(best), key=lambda j: -abs(best[j]))[:2]
    peak = [np.abs(r.weights[:n + 1, small]).max() for r in runs]
    shared = [(mu * lam, l1_final[round(mu * lam, 6)]) for lam in lams
              if round(mu * lam, 6) in l1_final]
    end = (f"All {len(runs)} trimmed runs end at the best 2-sparse fit of (c), W = "
           f"[{fmt_all(best.round(6) + 0.0, 'g')}] (to within 1e-8), with L "
           f"{fmt_loss(max(r.final_loss for r in runs))}"
           if all(np.allclose(r.final_weights, best, atol=1e-8) for r in runs) else
           "Not every trimmed run ends at the best 2-sparse fit of (c)")
    steps = runs[0].losses.size - 1
    moving = [still_falling(r) for r in runs]
    flat = [f"{lam:g}" for lam, f in zip(lams, moving) if not f]
    fall = [(f"{lam:g}", _per_step(r.losses, steps - PLATEAU_STEPS, steps))
            for lam, r, f in zip(lams, runs, moving) if f]
    noise = all(r.final_loss < 1e-20 for r, f in zip(runs, moving) if not f)
    level = [f"for λ = {', '.join(flat)} it has levelled off{' at round-off' * noise} (it "
             f"changes by less than a factor 10 over the last {PLATEAU_STEPS} steps)"] \
        if flat else []
    level += [f"for λ = {', '.join(lam for lam, _ in fall)} it is still falling, by a factor "
              f"{fmt_all([q for _, q in fall], '.2f')} per step over the last {PLATEAU_STEPS} "
              f"steps"] if fall else []
    return [
        f"Projected GD's L {falls} of the first {n} steps. On {fmt_support(sup[1])} it falls "
        f"from {ref.losses[0]:.0f} to {ref.losses[switch - 1]:.2f} over the first {switch - 1} "
        f"steps, by a factor {before:.2f} per step; after the switch to "
        f"{fmt_support(sup[switch])} at step {switch} the factor is {after:.2f} per step "
        f"({'faster' if after < before else 'not faster'}), down to {ref.losses[n]:.3g} at "
        f"step {n}.",
        f"Each trimmed run has a lower L than projected GD from step 1 to step "
        f"{with_lam([leading_steps_below(r, ref, n) for r in runs], lams)}; at step {n} its L is "
        f"{fmt_all([r.losses[n] for r in runs], '.3g')} against {ref.losses[n]:.3g}.",
        f"$W_1$ first reaches 0 at step "
        f"{with_lam([first_step_nonpositive(r, 1) for r in runs], lams)}; projected GD drops "
        f"it at step {switch}.",
        f"Over the first {n} steps the largest $|W_{small + 1}|$ is "
        f"{with_lam([f'{p:.3f}' for p in peak], lams)}, against {abs(best[small]):g} in the "
        f"limit; at step {n} $|W_{big + 1}|$ is "
        f"{fmt_all([abs(r.weights[n, big]) for r in runs], '.3f')}, against "
        f"{abs(best[big]):g}.",
        end + (f"; ℓ1 by proximal GD with the shared thresholds μλ = "
               f"{fmt_all([t for t, _ in shared], 'g')} ends at L = "
               f"{fmt_all([v for _, v in shared], '.4f')}." if shared else "."),
        f"At step {steps} L is {with_lam([f'{r.final_loss:.1e}' for r in runs], lams)}; "
        + "; ".join(level) + ".",
    ]


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
