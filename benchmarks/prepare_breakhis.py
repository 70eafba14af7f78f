"""Time ``BreakHis.download_and_prepare`` on a BreakHis-size synthetic tree.

Generates the 7,909-image / 82-patient fixture tree (real class, patient and
magnification proportions, tiny 8x8 PNGs) in a temporary directory and times the
preparation (scan, image verification, split, manifest, Arrow writing)::

    python benchmarks/prepare_breakhis.py                     # subtype8: all 7,909 images
    python benchmarks/prepare_breakhis.py --config malignant_200x --strategy paper
    python benchmarks/prepare_breakhis.py --tar               # feed the .tar.gz instead
    python benchmarks/prepare_breakhis.py --compare_verify    # none / fast / full in one run, as ratios

``verify_images="none"`` still checks that every file exists (it only skips the decode); ``--compare_verify``
shows what the decode of each mode costs next to that check.

The images are tiny, so this measures the builder's own overhead; on the real
archive, image verification (``verify_images="fast"``) and disk I/O add to it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import datasets  # noqa: E402

from cdtm_hf.data import BreakHis  # noqa: E402
from tests.data_fixtures import make_breakhis_tree, make_tar_gz  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="subtype8", help="BreakHis config (default: subtype8 = all 7,909 images)")
    parser.add_argument("--strategy", default="patient", choices=["patient", "paper"])
    parser.add_argument("--verify", default="fast", choices=["fast", "full", "none"], help="verify_images mode")
    parser.add_argument("--tar", action="store_true", help="pass BreaKHis_v1.tar.gz instead of the folder")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--compare_verify", action="store_true", help="time none, fast and full in one run")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory(prefix="breakhis_bench_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        info = make_breakhis_tree(tmp / "data", scale="full", seed=0)
        n_files = len(info["files"])
        data_dir = tmp / "data"
        if args.tar:
            data_dir = make_tar_gz(tmp / "data" / "BreaKHis_v1", tmp / "BreaKHis_v1.tar.gz")
        t_gen = time.perf_counter() - t0
        print(f"fixture: {n_files} images, {sum(len(v) for v in info['patients'].values())} patients, "
              f"generated in {t_gen:.2f} s{' (+ tar.gz)' if args.tar else ''}")  # fmt: skip

        modes = ("none", "fast", "full") if args.compare_verify else (args.verify,)
        repeats = 2 if args.compare_verify else 1  # best of two: the first run also warms caches and imports
        timings = {
            mode: min(_prepare(args, data_dir, tmp / f"cache_{mode}_{r}", mode) for r in range(repeats))
            for mode in modes
        }
        if args.compare_verify:
            base = timings["none"]
            print("ratio to verify_images='none' (file-exists check only): "
                  + ", ".join(f"{m} {t / base:.2f}x" for m, t in timings.items()))  # fmt: skip
    return 0


def _prepare(args, data_dir: Path, cache_dir: Path, verify: str) -> float:
    builder = BreakHis(
        config_name=args.config,
        data_dir=str(data_dir),
        cache_dir=str(cache_dir),
        split_strategy=args.strategy,
        seed=args.seed,
        verify_images=verify,
    )
    t0 = time.perf_counter()
    builder.download_and_prepare()
    elapsed = time.perf_counter() - t0
    ds = builder.as_dataset()
    n = sum(len(ds[s]) for s in ds)
    sizes = {s: len(ds[s]) for s in ds}
    print(f"config={args.config} strategy={args.strategy} verify={verify}: {n} images {sizes}")
    print(f"download_and_prepare: {elapsed:.2f} s, {n / elapsed:.0f} images/s")
    return elapsed


if __name__ == "__main__":
    raise SystemExit(main())
