#!/usr/bin/env python
"""Fine-tune a natural-image backbone with CDTM on a medical image set: scratch, LP, FFT or staged (SFT).

    accelerate launch examples/run_sft.py --backbone vitb16.laion2b --dataset breakhis \
        --dataset_config malignant_200x --data_dir BreaKHis_v1.tar.gz --finetune_mode sft --output_dir out/vitb-sft

Also runs as plain `python examples/run_sft.py ...`. Every option: `python examples/run_sft.py --help`.
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None):
    from transformers import HfArgumentParser

    from cdtm_hf.recipe import DataArguments, ModelArguments, run_finetuning
    from cdtm_hf.trainer import CDTMTrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, CDTMTrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith((".json", ".yaml", ".yml")):
        path = os.path.abspath(sys.argv[1])
        parse = parser.parse_json_file if path.endswith(".json") else parser.parse_yaml_file
        model_args, data_args, training_args = parse(path)
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    report = run_finetuning(model_args, data_args, training_args)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items())
    print(f"test: {metrics}\nresults: {os.path.join(training_args.output_dir, 'test_results.json')}")


if __name__ == "__main__":
    main()
