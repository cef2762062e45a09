"""Compare: a grid of runs and its report."""
