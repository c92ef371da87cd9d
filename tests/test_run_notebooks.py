"""run_notebooks.execute: every way execution can fail leaves <name>.error.ipynb and a
one-line reason, and never overwrites the good notebook."""
import nbformat
import pytest

import run_notebooks


def toy_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


@pytest.mark.smoke
def test_cell_timeout_leaves_error_notebook_and_reason(tmp_path):
    notebook = toy_notebook(tmp_path / "toy.ipynb", "print('first cell ran')",
                            "import time\ntime.sleep(30)")
    good = notebook.read_text()
    with pytest.raises(SystemExit) as info:
        run_notebooks.execute(notebook, notebook, {}, timeout=3)
    reason = str(info.value)
    assert "CellTimeoutError" in reason and "3 s" in reason and "\n" not in reason
    failed = nbformat.read(tmp_path / "toy.error.ipynb", as_version=4)
    assert "first cell ran" in failed.cells[0].outputs[0]["text"]  # as far as it ran
    assert notebook.read_text() == good


@pytest.mark.smoke
def test_cell_error_leaves_error_notebook_and_reason(tmp_path):
    notebook = toy_notebook(tmp_path / "bad.ipynb", "raise ValueError('no data here')")
    out = tmp_path / "out.ipynb"
    with pytest.raises(SystemExit, match=r"ValueError: no data here") as info:
        run_notebooks.execute(notebook, out, {}, timeout=60)
    assert "\n" not in str(info.value)
    assert (tmp_path / "out.error.ipynb").is_file() and not out.exists()


def test_full_mode_has_no_cell_timeout(monkeypatch):
    seen = {}
    monkeypatch.setattr(run_notebooks, "execute",
                        lambda nb, out, env, timeout=None: seen.setdefault(nb.name, timeout))
    run_notebooks.main(["--skip-report"])
    assert seen and all(t is None for t in seen.values())
    seen.clear()
    run_notebooks.main(["--quick", "--skip-report"])
    assert seen and all(t == run_notebooks.QUICK_CELL_TIMEOUT_S for t in seen.values())
