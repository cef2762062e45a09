"""Knowledge fusion after training: what several finished runs (or a run and its source) know,
combined at the level of outputs or weights.

- :mod:`.scores`: NLL, expected calibration error, temperature fitting (float64, no training);
- :mod:`.runs`: reading finished runs' outputs and writing a derived run directory;
- ``calibrate``, ``ensemble``, ``interpolate`` and ``soup``: one module each.

Every result is a run directory that ``evaluate``, ``predict``, ``card`` and ``push`` take.
"""
