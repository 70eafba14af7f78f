"""How long a refused command line takes (issue 17): the wall time of `examples/run_sft.py` given bad arguments.

    python benchmarks/refusal_time.py [--repeats 3] [--before /path/to/an/older/checkout]

Each case is one fresh interpreter (what a user waits for), timed with the others interleaved so machine noise hits
all alike; the medians are printed beside two floors measured in the same run: `import cdtm_hf` (the model core,
which registers the Auto classes and imports transformers' config and image-processing bases, hence torch) and
`import torch, transformers, timm, datasets` (what a refusal cost when it came after the heavy imports). With
`--before`, the same cases run against another checkout (e.g. the main branch before this change) and the ratio is
printed.

What remains of a refusal's time: the argument dataclasses are parsed by transformers' `HfArgumentParser`, and
`TrainingArguments` imports torch; `import cdtm_hf` imports the model core. A backbone name that is no preset is
looked up in timm's own registry (`timm.is_model`), so that case also imports timm. `datasets`, open_clip, the
model and the Trainer are not imported before the arguments are checked.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "bad --backbone (preset-like typo)": ["--backbone", "vitb16.laion3b", "--output_dir", "{tmp}/o"],
    "bad --backbone (no preset)": ["--backbone", "no_such_net", "--output_dir", "{tmp}/o"],
    "mistyped flag": ["--bakbone", "vitb16.laion2b", "--output_dir", "{tmp}/o"],
    "bad value type": ["--num_train_epochs", "many", "--output_dir", "{tmp}/o"],
}
FLOORS = {
    "floor: import cdtm_hf": "import cdtm_hf",
    "floor: import torch, transformers, timm, datasets": "import torch, transformers, timm, datasets",
}


def _run(repo: Path, argv: list[str], tmp: str) -> tuple[float, int, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(repo), TQDM_DISABLE="1")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], cwd=tmp, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, result.returncode, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout to time the same refusals against")
    args = parser.parse_args()
    repos = {"now": REPO, **({"before": args.before.resolve()} if args.before else {})}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {}
        for label, case in CASES.items():
            for side, repo in repos.items():
                argv = [str(repo / "examples" / "run_sft.py"), *(a.format(tmp=tmp) for a in case)]
                jobs[(label, side)] = (repo, argv)
        for label, code in FLOORS.items():
            jobs[(label, "now")] = (REPO, ["-c", code])
        samples: dict = {key: [] for key in jobs}
        last: dict = {}
        for _ in range(args.repeats):
            for key, (repo, argv) in jobs.items():
                seconds, rc, err = _run(repo, argv, tmp)
                samples[key].append(seconds)
                last[key] = (rc, [line for line in err.splitlines() if line.strip()])
    print(f"{os.cpu_count()} CPUs, {args.repeats} repeats each, medians of the wall time of a fresh interpreter")
    for label in [*CASES, *FLOORS]:
        row = f"{label:52s}"
        for side in repos:
            if (label, side) in samples:
                rc, lines = last[(label, side)]
                median = statistics.median(samples[(label, side)])
                row += f"  {side} {median:6.2f} s (exit {rc}, {len(lines)} stderr line{'s' if len(lines) != 1 else ''})"
        if (label, "before") in samples:
            ratio = statistics.median(samples[(label, "now")]) / statistics.median(samples[(label, "before")])
            row += f"  now/before {ratio:.2f}"
        print(row)


if __name__ == "__main__":
    main()
