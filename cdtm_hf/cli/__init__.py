"""The command lines: each a thin shell over library functions that parses and checks its arguments before it
imports the heavy parts.

`cdtm-train` (`train.py`, also `examples/run_sft.py`), `cdtm-grid` (`grid.py`, also `examples/run_grid.py`),
`cdtm-predict`, `cdtm-hub`, `cdtm-efficiency` and `cdtm-export`.
"""
