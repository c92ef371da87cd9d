"""The report section of a notebook beyond the homework (deep_compression.ipynb,
lecture_extensions.ipynb): one results file, subsections of tables, figures and generated
sentences, "not run" wherever something is missing.

Each section module declares its subsections, tables and discussions and wraps them in a
``NotebookSection``; the notebook calls ``table``/``discussion`` inline and the report builder
calls ``section``, so notebook and PDF cannot disagree.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from report.tables import NOT_RUN, QUICK_BANNER, caption, get, is_quick


def not_run_table(results: dict, title: str, what: str) -> str:
    """The caption of a table whose numbers are missing, and a line that says so."""
    return f"{caption(results, title)}\n\n*{what}: {NOT_RUN}.*\n"


def figure(path: Path, out_dir: Path, text: str) -> str:
    """Markdown image link relative to ``out_dir`` with its caption, or "not run"."""
    if not path.exists():
        return f"*Figure {path.name}: {NOT_RUN}.*"
    return f"![{path.stem}]({Path(os.path.relpath(path, out_dir)).as_posix()})\n\n*Figure: {text}.*"


@dataclass(frozen=True)
class NotebookSection:
    notebook: str          # e.g. "deep_compression.ipynb"
    results_name: str      # the JSON the notebook writes, e.g. "deep_compression.json"
    title: str
    subsections: dict      # key -> (heading, task, table keys, figures [(file, caption)])
    tables: dict           # table key -> function(results) -> markdown
    discussions: dict      # subsection key -> (function(results) -> text, results key it needs)

    def table(self, results: dict, key: str) -> str:
        """Caption line and markdown table for ``key``."""
        if key not in self.tables:
            raise KeyError(f"no table for {key!r}; known: {sorted(self.tables)}")
        return self.tables[key](results or {})

    def discussion(self, results: dict, key: str) -> str:
        """Two or three sentences generated from the numbers of ``key`` ("not run" if missing)."""
        if key not in self.discussions:
            raise KeyError(f"no discussion for {key!r}; known: {sorted(self.discussions)}")
        write, needs = self.discussions[key]
        if not get(results or {}, needs):
            return f"{self.subsections[key][0]}: {NOT_RUN}."
        text = write(results)
        return f"**{QUICK_BANNER}.** {text}" if is_quick(results) else text

    def load(self, results_dir: Path) -> dict:
        path = Path(results_dir) / self.results_name
        return json.loads(path.read_text()) if path.exists() else {}

    def section(self, results_dir: Path, out_dir: Path | None = None, number: int = 6) -> str:
        """Markdown of the section from ``results_dir``/<results_name> and the figures there
        (image links relative to ``out_dir``, default ``results_dir``)."""
        results_dir = Path(results_dir)
        out_dir = Path(out_dir) if out_dir else results_dir
        res = self.load(results_dir)
        parts = [f"# {number} {self.title}" + (f"\n\n**{QUICK_BANNER}**" if is_quick(res) else "")]
        if not res:
            parts.append(f"*No {self.results_name} beside the report: {self.notebook} {NOT_RUN}.*")
        for key, (heading, task, tables, figures) in self.subsections.items():
            block = [f"## {heading}", f"*Task:* {task}", *[self.table(res, t) for t in tables],
                     *[figure(results_dir / f, out_dir, text) for f, text in figures],
                     self.discussion(res, key)]
            parts.append("\n\n".join(b.strip() for b in block))
        return "\n\n".join(parts) + "\n"

