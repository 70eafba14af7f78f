"""The cost of an extra test set (`--extra_test`) relative to the main test pass, measured in one run.

    python benchmarks/extra_test.py [--images 48] [--resamples 1000]

One tiny SFT run through `examples/run_sft.py` on a synthetic image folder, with one extra test folder the same size
as its test split. The main pass is prediction, metrics, intervals, calibration and the plots
(`report["test_seconds"]`); the extra set's is loading its folder, prediction, metrics, intervals and calibration
(`report["extra_tests"][name]["seconds"]`). Expect a ratio near 1 (no plots for an extra set; it loads its folder).
"""

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import write_imagefolder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="test images per class (and extra images)")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("run_sft", REPO / "examples" / "run_sft.py")
    run_sft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_sft)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_imagefolder(Path(tmp) / "data", per_class=(8, 4, args.images), size=40)
        extra = write_imagefolder(Path(tmp) / "extra", per_class=(args.images - 2, 1, 1), size=40)
        report = run_sft.main([
            "--backbone", "test_vit", "--backbone_library", "timm", "--no_backbone_pretrained", "--image_size", "32",
            "--num_centers", "3", "--report_to", "none", "--disable_tqdm", "True", "--stage1_epochs", "1",
            "--stage2_epochs", "1", "--warmup_epochs", "0", "--data_dir", str(data), "--output_dir",
            str(Path(tmp) / "out"), "--bootstrap_resamples", str(args.resamples), "--extra_test", f"extra={extra}",
        ])
    main_s, extra_s = report["test_seconds"], report["extra_tests"]["extra"]["seconds"]
    n_main, n_extra = report["num_test_examples"], report["extra_tests"]["extra"]["num_images"]
    print(f"main test pass: {n_main} images, {main_s:.2f} s (predict, metrics, intervals, calibration, plots)")
    print(f"extra test set: {n_extra} images, {extra_s:.2f} s (load, predict, metrics, intervals, calibration)")
    print(f"extra / main: {extra_s / main_s:.2f}x")


if __name__ == "__main__":
    main()
