"""`evaluate` metric modules shipped with cdtm_hf.

Each module here is an `evaluate` script: it imports nothing from cdtm_hf, because `evaluate.load` copies the file
into its modules cache and imports it from there. Load one offline from its package path, never from the Hub:

```python
>>> import evaluate
>>> from cdtm_hf.evaluation.evaluate_metrics import CLASSIFICATION_METRIC_PATH
>>> metric = evaluate.load(str(CLASSIFICATION_METRIC_PATH))  # or config_name="multilabel"
>>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)["f1_eq12"]
```

`cdtm_hf.evaluation.metrics.load_classification_metric` does this once per process.
"""

from __future__ import annotations

from pathlib import Path

#: the classification metric script (macro P/R/F1, the paper's Eq. 12 F1, accuracy, confusion matrix; multi-label AUROC)
CLASSIFICATION_METRIC_PATH = Path(__file__).with_name("cdtm_classification.py")

__all__ = ["CLASSIFICATION_METRIC_PATH"]
