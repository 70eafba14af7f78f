"""How long a refused command line takes (issues 16, 17): the wall time of `examples/run_sft.py` given bad arguments.

    python benchmarks/refusal_time.py [--repeats 3] [--before /path/to/an/older/checkout]

Each case is one fresh interpreter (what a user waits for), timed with the others interleaved so machine noise hits
all alike; the medians are printed beside floors measured in the same run: `import cdtm_hf`, `import torch` and
`import torch, transformers, timm, datasets` (what a refusal cost when it came after the heavy imports). With
`--before`, the same cases run against another checkout (e.g. the main branch before this change) and the ratio is
printed.

A bad `--backbone` is refused before torch, transformers and timm are imported (issue 16): `import cdtm_hf` imports
none of them, and the check reads timm's and open_clip's model names from `<HF_HOME>/cdtm_hf/model_names`, written
by the first check on a machine ("warm"). The "cold" case gives every run an empty HF_HOME, as the very first check
after installing: that one imports timm and open_clip to ask their registries. The other refusals (a mistyped flag, a
bad value) come from transformers' `HfArgumentParser` over `TrainingArguments`, which imports torch, accelerate and
(where installed) peft.
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
    "bad --backbone, cold (first check on the machine)": ["--backbone", "no_such_net", "--output_dir", "{tmp}/o"],
    "bad --backbone (preset-like typo)": ["--backbone", "vitb16.laion3b", "--output_dir", "{tmp}/o"],
    "bad --backbone (no preset)": ["--backbone", "no_such_net", "--output_dir", "{tmp}/o"],
    "mistyped flag": ["--bakbone", "vitb16.laion2b", "--output_dir", "{tmp}/o"],
    "bad value type": ["--num_train_epochs", "many", "--output_dir", "{tmp}/o"],
}
FLOORS = {
    "floor: import cdtm_hf": "import cdtm_hf",
    "floor: import torch": "import torch",
    "floor: import torch, transformers, timm, datasets": "import torch, transformers, timm, datasets",
}


def _run(repo: Path, argv: list[str], tmp: str, hf_home: str) -> tuple[float, int, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(repo), TQDM_DISABLE="1", HF_HOME=hf_home)
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
        warm = os.path.join(tmp, "hf_warm")
        for repo in repos.values():  # the warm cases' HF_HOME: one check has run there
            _run(repo, [str(repo / "examples" / "run_sft.py"), "--backbone", "no_such_net", "--output_dir", "o"], tmp,
                 warm)
        for repeat in range(args.repeats):
            for key, (repo, argv) in jobs.items():
                cold = key[0].startswith("bad --backbone, cold")
                hf_home = os.path.join(tmp, f"hf_cold_{repeat}_{key[1]}") if cold else warm
                seconds, rc, err = _run(repo, argv, tmp, hf_home)
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
