"""How far to trust each explanation.

- metrics.py: the one table of metrics (key, label, better direction, definition).
- scoring.py: every metric of one method, per image (the quality@<method> stages).
- verdict.py: the verdict per method from interval tests against the controls, the meta-evaluation of the
  sanity checks against the ground truth, and which published findings reproduce (the verdicts stage).
- localisation.py (ground truth), faithfulness.py, randomisation.py, robustness.py, complexity.py: the
  metrics themselves; stats.py: ranks and bootstrap intervals.
"""
