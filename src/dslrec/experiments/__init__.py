"""Experiments above single runs: grids of runs (``sweep``) and what they say (``report``).

    dslrec sweep --config SWEEP.yaml [--jobs N]     train a grid, write its results table
    dslrec report RUN_OR_SWEEP_DIR [--out DIR]       Markdown report with figures
"""
