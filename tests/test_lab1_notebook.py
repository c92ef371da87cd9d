"""Executes lab1_sparse_linear.ipynb top to bottom, as CI and the grader do, and ties every
quantitative Lab 1 claim in the summary to a number recomputed here.

Outputs of the run are redirected to a pytest temp dir through LAB1_REPORT_DIR so the run
never touches the committed report/ files. The recomputation below does not use
sparse_linear: the optimizers are re-implemented in a few lines of NumPy from the
assignment's update rules, and every measurement is taken with plain NumPy.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "lab1_sparse_linear.ipynb"
SUMMARY = REPO / "report" / "lab1_summary.md"
EXPECTED_PNGS = sorted(
    [f"lab1_{q}_{kind}.png" for q in "bcdef" for kind in ("loss", "weights")]
    + ["lab1_f_first20.png"]
)

# The lab's data and settings, typed in from the assignment.
X = np.array([[1, -2, -1, -1, 1], [2, -1, 2, 0, -2], [-1, 0, 2, 2, 1]], dtype=float)
Y = np.array([7, 1, 1], dtype=float)
MU, STEPS = 0.02, 200
LAMBDAS, LAMBDAS_T = (0.2, 0.5, 1.0, 2.0), (1.0, 2.0, 5.0, 10.0)


# ----------------------------------------------------------------------------- recomputation
def soft(v: np.ndarray, t: float) -> np.ndarray:
    """Soft threshold, written out: shrink |v| by t, zero what crosses 0."""
    return np.where(np.abs(v) > t, v - t * np.sign(v), 0.0)


def top2(v: np.ndarray) -> np.ndarray:
    """Keep the two largest |v_j| (stable order), zero the rest."""
    out = np.zeros_like(v)
    keep = np.argsort(-np.abs(v), kind="stable")[:2]
    out[keep] = v[keep]
    return out


def trimmed(v: np.ndarray, t: float) -> np.ndarray:
    """Soft threshold on the 3 smallest |v_j| only."""
    out = v.copy()
    small = np.argsort(-np.abs(v), kind="stable")[2:]
    out[small] = soft(v[small], t)
    return out


def descend(op, lam_sign: float = 0.0, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Weights (steps+1, 5) and pre-operator points V of W <- op(W - mu (grad L + lam sign W))."""
    w, ws, vs = np.zeros(5), [np.zeros(5)], [np.full(5, np.nan)]
    for _ in range(steps):
        v = w - MU * (2 * X.T @ (X @ w - Y) + lam_sign * np.sign(w))
        w = op(v)
        ws.append(w)
        vs.append(v)
    return np.array(ws), np.array(vs)


def losses(ws: np.ndarray) -> np.ndarray:
    return ((ws @ X.T - Y) ** 2).sum(axis=1)


def first_nonpositive_w1(ws: np.ndarray) -> int | None:
    hit = [k for k in range(1, len(ws)) if ws[k, 0] <= 0]
    return hit[0] if hit else None


def tail_jump(series: np.ndarray, last: int = 50) -> tuple[float, int]:
    """Largest |s_k - s_(k-1)| for the last `last` steps k, and that k."""
    s = series.reshape(len(series), -1)
    jumps = [(np.abs(s[k] - s[k - 1]).max(), k) for k in range(len(s) - last, len(s))]
    return max(jumps)


# ----------------------------------------------------------------------------- the summary text
def sections(summary: str) -> dict[str, str]:
    """{question letter: text} of the "## (q)" sections of lab1_summary.md."""
    parts = re.split(r"^## \(([a-f])\).*$", summary, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def bullet(text: str, *words: str) -> str:
    """The one bullet of ``text`` that contains all ``words``."""
    hits = [line for line in text.splitlines()
            if line.startswith("- ") and all(w in line for w in words)]
    assert len(hits) == 1, (words, hits)
    return hits[0]


def joined(values, spec: str) -> str:
    return ", ".join(format(v, spec) for v in values)


def check_c(text: str) -> None:
    ws, vs = descend(top2)
    L = losses(ws)
    sup = [tuple(np.flatnonzero(w) + 1) for w in ws]
    switch = next(k for k in range(1, STEPS + 1) if sup[k] == sup[-1] and sup[k - 1] != sup[k])
    assert sup[1] == (1, 2) and sup[-1] == (2, 5) and switch == 7
    assert all(sup[k] == (2, 5) for k in range(switch, STEPS + 1))
    assert np.all(ws[1:switch, 4] == 0)                      # W5 projected to 0 every step
    peak = int(np.argmax(ws[1:switch, 0])) + 1
    assert 1 < peak < switch - 1                              # W1 grows, then shrinks
    # before the projection |W1| drops below |W5| exactly at the switch
    assert abs(vs[switch, 0]) < abs(vs[switch, 4])
    assert abs(vs[switch - 1, 0]) > abs(vs[switch - 1, 4])
    s = bullet(text, "grows to")
    assert f"$W_1$ grows to {ws[peak, 0]:.4f} at step {peak} and then shrinks" in s
    s = bullet(text, "$W_5$ is set to 0")
    v5 = np.abs(vs[1:switch, 4])
    assert f"between {v5.min():.4f} and {v5.max():.4f}" in s
    s = bullet(text, f"At step {switch}")
    assert f"{abs(vs[switch, 0]):.4f}" in s and f"{abs(vs[switch, 4]):.4f}" in s
    s = bullet(text, "L falls from")
    assert np.all(np.diff(L[:switch]) < 0)
    assert f"from {L[0]:.0f} to {L[switch - 1]:.2f}" in s and L[0] == 51
    cols = X[:, [0, 1]]
    fit12 = np.linalg.lstsq(cols, Y, rcond=None)[1][0]        # residual sum of squares
    assert f"L = {fit12:.4f}" in s


def check_d(text: str) -> None:
    runs = [descend(lambda v: v, lam)[0] for lam in LAMBDAS]
    chatter = [tail_jump(ws)[0] for ws in runs]
    jitter = [tail_jump(np.log10(losses(ws))) for ws in runs]
    final = [losses(ws)[-1] for ws in runs]
    assert np.all(np.diff(chatter) > 0)                       # chatter grows with lambda
    assert int(np.argmax([j for j, _ in jitter])) == 1        # log L jitter largest at 0.5
    assert not np.all(np.diff([j for j, _ in jitter]) > 0)
    assert all(np.count_nonzero(ws[-1]) == 5 for ws in runs)
    s = bullet(text, "chatter grows with λ")
    assert f"{joined(chatter, '.4f')} for λ = 0.2, 0.5, 1, 2" in s
    s = bullet(text, "jitter of", "does not grow with λ")
    assert joined([j for j, _ in jitter], ".3f") in s
    assert f"largest at λ = 0.5 (step {jitter[1][1]}" in s
    assert f"({joined(final, '.4f')})" in bullet(text, "final value grows with λ")
    w1 = [first_nonpositive_w1(ws) for ws in runs]
    w1[0] = first_nonpositive_w1(descend(lambda v: v, 0.2, steps=2000)[0])
    s = bullet(text, "first reaches 0 at step")
    assert f"step {joined(w1, 'd')} for λ" in s
    times = [lam * k for lam, k in zip(LAMBDAS, w1)]           # 0.2 * 398 = 79.6 exactly
    assert f"λ × step lies between {min(times):.4g} and {max(times):.4g}" in s
    assert "No run has an exact zero" in text


def check_e(text: str) -> None:
    runs = [descend(lambda v, t=MU * lam: soft(v, t)) for lam in LAMBDAS]
    back = []                                                 # (step, weight) of zeros that return
    for ws, _ in runs:
        back.append([(k, j + 1) for k in range(2, STEPS + 1) for j in range(5)
                     if ws[k - 1, j] == 0 and ws[k, j] != 0])
    assert back[0][:1] == back[1][:1] == [(8, 3)] and back[2] == back[3] == []
    s = bullet(text, "non-zero again after step")
    assert "At μλ = 0.004, 0.01, $W_3$ is 0 after step 7 and non-zero again after step 8" in s
    assert joined([abs(vs[8, 2]) for _, vs in runs[:2]], ".4f") in s
    assert all(abs(vs[8, 2]) > MU * lam for (_, vs), lam in zip(runs[:2], LAMBDAS))
    assert "At μλ = 0.02, 0.04 no weight that was set to 0 becomes non-zero again" in text
    rises = [int(np.sum(np.diff(losses(ws)) > 1e-12)) for ws, _ in runs]
    rises_d = [int(np.sum(np.diff(losses(descend(lambda v: v, lam)[0])) > 1e-12))
               for lam in LAMBDAS]
    assert rises == [0, 0, 0, 0] and min(rises_d) > 0
    assert f"L rises at {joined(rises, 'd')} of the 200 steps" in text
    assert f"against {joined(rises_d, 'd')} steps of (d)" in text


def check_f(text: str) -> None:
    pgd = losses(descend(top2)[0])
    runs = [descend(lambda v, t=MU * lam: trimmed(v, t))[0] for lam in LAMBDAS_T]
    assert pgd[0] == 51 and round(pgd[6]) == 12 and np.all(np.diff(pgd[:21]) < 0)
    s = bullet(text, "Projected GD's L falls at every one of the first 20 steps")
    assert f"from 51 to {pgd[6]:.2f} over the first 6 steps" in s
    lead = []
    for ws in runs:
        below = losses(ws)[1:21] < pgd[1:21]
        lead.append(20 if below.all() else int(np.argmin(below)))
    assert min(lead) >= 12
    assert f"from step 1 to step {joined(lead, 'd')} for λ = 1, 2, 5, 10" in text
    w1 = [first_nonpositive_w1(ws) for ws in runs]
    assert f"$W_1$ first reaches 0 at step {joined(w1, 'd')} for λ = 1, 2, 5, 10" in text
    # where each run's L stands at step 200: levelled off at round-off (within a factor 10
    # over the last 10 steps, and at the size of |y| * eps squared) or still falling
    L = [losses(ws) for ws in runs]
    s = bullet(text, "At step 200 L is")
    assert f"L is {joined([l[-1] for l in L], '.1e')} for λ = 1, 2, 5, 10" in s
    flat = [lam for lam, l in zip(LAMBDAS_T, L) if l[-1] >= l[-11] / 10]
    falling = [lam for lam, l in zip(LAMBDAS_T, L) if l[-1] < l[-11] / 10]
    eps = np.finfo(float).eps
    assert all(l[-1] < len(Y) * (np.abs(Y).max() * eps) ** 2 * 10
               for lam, l in zip(LAMBDAS_T, L) if lam in flat)
    assert flat and falling  # both clauses are checked below
    assert f"for λ = {joined(flat, 'g')} it has levelled off at round-off" in s
    rates = [(l[-1] / l[-11]) ** 0.1 for lam, l in zip(LAMBDAS_T, L) if lam in falling]
    assert (f"for λ = {joined(falling, 'g')} it is still falling, by a factor "
            f"{joined(rates, '.2f')} per step") in s


CHECKS = {"c": check_c, "d": check_d, "e": check_e, "f": check_f}


def check_summary(summary: str) -> None:
    """Every quantitative claim of (c)-(f) against the recomputation above."""
    found = sections(summary)
    assert sorted(found) == sorted(CHECKS)
    for q, check in CHECKS.items():
        check(found[q])
    assert summary.count("\n| (") == 14  # one final-table row per run: b, c, 4 x d, 4 x e, 4 x f


# ----------------------------------------------------------------------------- tests
def test_committed_summary_claims_match_recomputation() -> None:
    # report/lab1_summary.md is what the PDF shows; a stale or wrong claim fails here
    check_summary(SUMMARY.read_text(encoding="utf-8"))


@pytest.mark.parametrize("old, new", [
    ("from 51 to 12.03", "from 51 to 12.30"),                          # (c), (f)
    ("largest at λ = 0.5", "largest at λ = 2"),                         # (d)
    ("non-zero again after step 8", "non-zero again after step 9"),     # (e)
    ("The weight chatter grows with λ", "The weight chatter does not grow steadily with λ"),
    ("lies between 79.6 and 88", "lies between 80 and 88"),           # (d)
    ("for λ = 2, 5, 10 it has levelled off", "for λ = 1, 2, 5, 10 it has levelled off"),  # (f)
])
def test_check_summary_catches_a_wrong_claim(old: str, new: str) -> None:
    good = SUMMARY.read_text(encoding="utf-8")
    assert old in good
    with pytest.raises(AssertionError):
        check_summary(good.replace(old, new))


def test_notebook_runs_and_writes_report(tmp_path: Path, monkeypatch) -> None:
    # The kernel inherits this process's environment.
    monkeypatch.setenv("LAB1_REPORT_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    written = sorted(p.name for p in tmp_path.glob("lab1_*.png"))
    assert written == EXPECTED_PNGS
    assert all((tmp_path / name).stat().st_size > 1000 for name in EXPECTED_PNGS)
    summary = (tmp_path / "lab1_summary.md").read_text(encoding="utf-8")
    check_summary(summary)
    # the notebook shows each question's numbers right under its run
    shown = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells
                      if c.cell_type == "code" for o in c.outputs)
    for q, text in sections(summary).items():
        assert text.strip() in shown, q
