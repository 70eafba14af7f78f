"""`cdtm-train`: fine-tune a natural-image backbone with CDTM on a medical image set: scratch, LP, FFT or staged (SFT).

    accelerate launch -m cdtm_hf.cli.train --backbone vitb16.laion2b --dataset breakhis \\
        --dataset_config malignant_200x --data_dir BreaKHis_v1.tar.gz --finetune_mode sft --output_dir out/vitb-sft
    cdtm-train ...                          # the same, installed as a console script
    python examples/run_sft.py ...          # the same, as the HF examples are run

Evaluate a saved model without training (HF style): `--do_train False --model_name_or_path out/vitb-sft`. One JSON
or YAML file of arguments can replace the flags. The arguments are parsed and checked (`HfArgumentParser` over the
argument dataclasses, each field checked on construction) before the data, the model or the Trainer is loaded.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["build_parser", "main", "parse", "train"]

logger = logging.getLogger("cdtm-train")

#: help for the TrainingArguments fields whose defaults CDTMTrainingArguments changes to the paper's (Sec. III-E)
PAPER_DEFAULTS_HELP = {
    "learning_rate": "peak learning rate; SFT stage 1 (stage 2 takes a tenth unless --stage2_learning_rate)",
    "per_device_train_batch_size": "training batch size per device",
    "per_device_eval_batch_size": "evaluation batch size per device",
    "num_train_epochs": "epochs of scratch/lp/fft (SFT uses --stage1_epochs and --stage2_epochs)",
    "weight_decay": "AdamW weight decay",
    "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2",
    "optim": "optimizer (a transformers OptimizerNames value)",
    "lr_scheduler_type": "schedule after the warmup of each stage",
    "metric_for_best_model": "validation metric that selects the kept model (f1 = macro-F1)",
    "save_total_limit": "checkpoints kept per stage",
    "report_to": "logging integrations",
}


def build_parser():
    """The parser of the four argument dataclasses; `--do_train` defaults to True and `--output_dir` is required."""
    from transformers import HfArgumentParser

    from ..training.arguments import CDTMTrainingArguments
    from ..training.run_arguments import DataArguments, ModelArguments, RunArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, CDTMTrainingArguments, RunArguments))
    parser.set_defaults(do_train=True)
    for action in parser._actions:
        if action.dest in PAPER_DEFAULTS_HELP:
            action.help = f"{PAPER_DEFAULTS_HELP[action.dest]} (default: %(default)s, this package's)"
        elif action.dest == "do_train":
            action.help = "train (default); --do_train False tests --model_name_or_path without training"
        elif action.dest == "output_dir":
            action.required = True
            action.help = "where the model, checkpoints, results and model card are written (required)"
    return parser


def parse(argv: list[str] | None = None):
    """(model, data, training, run) arguments from `argv`, or from one JSON/YAML file given as the only argument."""
    parser = build_parser()
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0].endswith((".json", ".yaml", ".yml")):
        import yaml

        with open(os.path.abspath(args[0]), encoding="utf-8") as f:
            values = yaml.safe_load(f)  # JSON is YAML
        if not values.get("output_dir"):
            parser.error(f"{args[0]} sets no output_dir; add one (the run refuses to write ./trainer_output)")
        return parser.parse_dict({"do_train": True, **values})
    return parser.parse_args_into_dataclasses(args=args)


def setup_logging(training_args) -> None:
    """Log as the HF examples do: this process's level for transformers, datasets and cdtm_hf's stage messages."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    level = training_args.get_process_log_level()
    for name in ("cdtm_hf", "cdtm-train"):
        logging.getLogger(name).setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def train(argv: list[str] | None = None) -> dict:
    """Run one fine-tuning (or, with `--do_train False`, one evaluation) and return its `test_results.json` dict."""
    model_args, data_args, training_args, run_args = parse(argv)
    setup_logging(training_args)
    from ..run import run_evaluation, run_finetuning

    run = run_finetuning if training_args.do_train else run_evaluation
    if run_args.cv_folds and training_args.do_train:  # issue 19: K-fold cross-validation
        from ..experiments.cross_validation import run_cross_validation as run
    if run_args.lr_sweep and training_args.do_train:  # issue 19: learning rates chosen on validation
        from ..experiments.lr_sweep import run_lr_sweep as run
    report = run(model_args, data_args, training_args, run_args)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items())
    print(f"test: {metrics}\nresults: {os.path.join(training_args.output_dir, 'test_results.json')}")
    return report


def main(argv: list[str] | None = None) -> int:
    """The `cdtm-train` console script: `train(argv)`, exit status 0."""
    train(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
