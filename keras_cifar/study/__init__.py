"""From run folders to verdicts: stats.py (intervals and the verdict rule), claims.py (runs against the
report's claims), report.py (a recipe's table and summary), compare.py (every experiment on one page),
plots.py (every figure)."""
