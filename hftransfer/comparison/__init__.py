"""``hftransfer compare``: a grid of runs — strategies (or source models) × label budgets ×
seeds, the scratch baseline among them — trained in this process or on Ray, and a report of
what each transfer bought (``report.md``, ``report.html``).

``grid`` checks the user's input and makes each cell's recipe; ``runner`` trains the cells and
writes the results; ``report`` renders them (``stats`` does the statistics).
"""
from .report import render_report
from .runner import CompareResult, compare

__all__ = ["CompareResult", "compare", "render_report"]
