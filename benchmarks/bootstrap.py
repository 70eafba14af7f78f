"""The bootstrap's cost: 1,000 resamples of 10,000 predictions, against a Python loop over resamples.

    python benchmarks/bootstrap.py [--predictions 10000] [--resamples 1000] [--classes 4] [--patients 500]

All timings come from this one run (medians of interleaved repeats for the fast paths). Target: the vectorised
single-label bootstrap of all five metrics well under a second. The loops are what the vectorisation replaces:
`sklearn.metrics.precision_recall_fscore_support` once per resample, and numpy index resampling once per resample.
"""

import argparse
import time

import _timing
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from cdtm_hf.evaluation.calibration import calibration_intervals
from cdtm_hf.evaluation.patients import patient_level_results
from cdtm_hf.evaluation.reporting import format_number, markdown_table
from cdtm_hf.evaluation.resampling import confusion_scores
from cdtm_hf.evaluation.uncertainty import bootstrap_metrics, bootstrap_per_class, paired_bootstrap


def sklearn_loop(preds, labels, classes, resamples, rng):
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        precision_recall_fscore_support(labels[idx], preds[idx], labels=range(classes), zero_division=0)


def numpy_loop(preds, labels, classes, resamples, rng):
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        confusion_scores(np.bincount(labels[idx] * classes + preds[idx], minlength=classes**2).reshape(classes, -1))


def once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--predictions", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--labels", type=int, default=5, help="labels of the multi-label case")
    args = parser.parse_args()
    n, b, k = args.predictions, args.resamples, args.classes
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 1.5
    other = logits + rng.normal(size=(n, k))
    groups = rng.integers(0, args.patients, n)
    multi = (rng.random((n, args.labels)) < 0.3).astype(int)
    multi_logits = rng.normal(size=(n, args.labels)) + 2 * multi - 1
    names = [f"c{i}" for i in range(k)]
    fast = {
        "image, BCa (default)": lambda: bootstrap_metrics(logits, labels, resamples=b),
        "image, percentile": lambda: bootstrap_metrics(logits, labels, resamples=b, method="percentile"),
        f"patient ({args.patients}), BCa": lambda: bootstrap_metrics(logits, labels, groups, resamples=b),
        "paired, patient, BCa": lambda: paired_bootstrap(logits, other, labels, groups, resamples=b),
        "per-class, patient, BCa": lambda: bootstrap_per_class(logits, labels, names, groups, resamples=b),
        "calibration (ECE/Brier/NLL), image": lambda: calibration_intervals(logits, labels, resamples=b),
        "patient-level results + recognition rate": lambda: patient_level_results(logits, labels, groups,
                                                                                  resamples=b),
    }
    times = _timing.interleaved_medians(fast, repeats=5)
    slow = {
        f"multi-label ({args.labels} labels), image, percentile": once(
            lambda: bootstrap_metrics(multi_logits, multi, resamples=b, method="percentile")),
        f"multi-label ({args.labels} labels), patient, BCa": once(
            lambda: bootstrap_metrics(multi_logits, multi, groups, resamples=b)),
        "loop: numpy per resample (accuracy, P, R, F1)": once(
            lambda: numpy_loop(logits.argmax(1), labels, k, b, np.random.default_rng(1))),
        "loop: sklearn per resample (P, R, F1)": once(
            lambda: sklearn_loop(logits.argmax(1), labels, k, b, np.random.default_rng(1))),
    }
    reference = times["image, BCa (default)"]
    rows = [[name, format_number(sec, 4), format_number(sec / reference, 1, suffix="x")]
            for name, sec in {**times, **slow}.items()]
    print(f"{b} resamples of {n} predictions, {k} classes (all five metrics unless noted)\n")
    print(markdown_table(["bootstrap", "seconds", "vs image BCa"], rows, align=["l", "r", "r"]))
    print(f"\nloop over resamples with sklearn / vectorised image BCa: "
          f"{slow['loop: sklearn per resample (P, R, F1)'] / reference:.0f}x")
    verdict = "well under a second" if reference < 0.25 else "NOT well under a second"
    print(f"vectorised single-label bootstrap: {reference:.4f} s ({verdict})")


if __name__ == "__main__":
    main()
