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

from .boundary import (RunInterrupted, command_line, no_space_message, one_line_errors, refuse_unknown_flags,
                       writing_into)

__all__ = ["build_parser", "main", "parse", "refuse_unknown_backbone", "train"]

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
    from ..training.arguments import CDTMArgumentParser, CDTMTrainingArguments
    from ..training.run_arguments import DataArguments, ModelArguments, RunArguments

    # --backbone_norm_eval true, as --augment true (issue 18): CDTMArgumentParser takes every boolean spelling
    parser = CDTMArgumentParser((ModelArguments, DataArguments, CDTMTrainingArguments, RunArguments))
    one_line_errors(parser)  # issue 17: a bad argument is one line, exit 2
    parser.set_defaults(do_train=True)
    for action in parser.arguments:
        if action.dest in PAPER_DEFAULTS_HELP:
            action.help = f"{PAPER_DEFAULTS_HELP[action.dest]} (default: %(default)s, this package's)"
        elif action.dest == "do_train":
            action.help = "train (default); --do_train False tests --model_name_or_path without training"
        elif action.dest == "output_dir":
            action.required = True
            action.help = "where the model, checkpoints, results and model card are written (required)"
    _group_help(parser, (ModelArguments, DataArguments, CDTMTrainingArguments, RunArguments))  # issue 18
    return parser


#: the inherited TrainingArguments options `--help` lists beside the paper's defaults (the rest: `--help_all`)
COMMON_TRAINING_OPTIONS = ("output_dir", "do_train", "seed", "resume_from_checkpoint", "gradient_accumulation_steps",
                           "logging_steps", "disable_tqdm", "use_cpu", "push_to_hub", "hub_model_id")
TRAINING_ARGUMENTS_DOCS = "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"


def _group_help(parser, dataclass_types) -> None:
    """`--help`: the package's own options by group, then the TrainingArguments options whose defaults it sets and
    the most used ones, and a pointer for the other inherited ones; `--help_all` prints every option.

    The short help is a second, display-only `ArgumentParser` with one argument group per section, formatted by
    argparse itself: each shown option is added to it with its first spelling, help, default and metavar.
    """
    import argparse
    import dataclasses

    from transformers import TrainingArguments

    model_t, data_t, training_t, run_t = dataclass_types
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    full_help = parser.format_help

    class HelpAll(argparse.Action):
        def __call__(self, parser_, namespace, values, option_string=None):
            sys.stdout.write(full_help())
            parser_.exit()

    parser.add_argument("--help_all", action=HelpAll, nargs=0, default=argparse.SUPPRESS,
                        help="show every option, the inherited TrainingArguments ones included, and exit")
    by_dest: dict[str, list] = {}
    for action in parser.arguments:
        by_dest.setdefault(action.dest, []).append(action)

    def shown(names):  # one spelling per option, the --no_<flag> twins left to --help_all
        return [a for name in names for a in by_dest.get(name, ())
                if not any(o.startswith("--no_") for o in a.option_strings)]

    def names(cls, keep=lambda name: True):
        return [f.name for f in dataclasses.fields(cls) if keep(f.name)]

    sections = [
        ("help", shown(["help", "help_all"])),
        ("model (cdtm_hf ModelArguments)", shown(names(model_t))),
        ("data (cdtm_hf DataArguments)", shown(names(data_t))),
        ("fine-tuning (cdtm_hf CDTMTrainingArguments)", shown(names(training_t, lambda n: n not in inherited))),
        ("training (transformers TrainingArguments: this package's defaults and the most used)",
         shown([*COMMON_TRAINING_OPTIONS, *PAPER_DEFAULTS_HELP])),
        ("output folder (cdtm_hf RunArguments)", shown(names(run_t))),
    ]
    listed = {a.dest for _, group in sections for a in group}
    hidden = sorted({n for n in inherited if n in by_dest} - listed)
    display = argparse.ArgumentParser(
        prog=parser.prog, usage="%(prog)s [--help | --help_all] --output_dir DIR [options]",
        description=parser.description, add_help=False, formatter_class=parser.formatter_class,
        epilog=f"The other {len(hidden)} options of transformers' TrainingArguments are accepted too (--help_all "
               f"lists them; documented at {TRAINING_ARGUMENTS_DOCS}).")
    for title, actions in sections:
        group = display.add_argument_group(title)
        for action in actions:
            if action.nargs == 0:  # a switch: no value shown
                group.add_argument(action.option_strings[0], action="store_true", default=argparse.SUPPRESS,
                                   help=action.help)
                continue
            group.add_argument(action.option_strings[0], nargs=action.nargs, metavar=action.metavar,
                               choices=action.choices, help=action.help,
                               default=argparse.SUPPRESS if action.default is None else action.default)
    parser.format_help = display.format_help


def parse(argv: list[str] | None = None):
    """(model, data, training, run) arguments from `argv`, or from one JSON/YAML file given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    from_file = len(args) == 1 and args[0].endswith((".json", ".yaml", ".yml"))
    if from_file:
        import yaml

        with open(os.path.abspath(args[0]), encoding="utf-8") as f:
            values = yaml.safe_load(f)  # JSON is YAML
        values = values if isinstance(values, dict) else {}
        refuse_unknown_backbone(values)
    elif not HELP_FLAGS.intersection(args):
        refuse_unknown_backbone(_backbone_flags(args))
    parser = build_parser()
    if from_file:
        if not values.get("output_dir"):
            parser.error(f"{args[0]} sets no output_dir; add one (the run refuses to write ./trainer_output)")
        return parser.parse_dict({"do_train": True, **values})
    refuse_unknown_flags(parser, args, parser.arguments)  # issue 17: a mistyped flag first, before any value is checked
    return parser.parse_args_into_dataclasses(args=args)


#: the flags that print help, which goes before any check
HELP_FLAGS = frozenset({"-h", "--help", "--help_all"})
#: the flags `refuse_unknown_backbone` reads, with the dashed spellings HfArgumentParser also accepts
BACKBONE_FLAGS = ("backbone", "backbone_library", "model_name_or_path")


def _backbone_flags(args: list[str]) -> dict:
    """The values of `BACKBONE_FLAGS` on a command line (the rest of it is left to the full parser)."""
    import argparse

    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in BACKBONE_FLAGS:
        early.add_argument(f"--{name}", f"--{name.replace('_', '-')}", dest=name)
    known, _ = early.parse_known_args(list(args))
    return vars(known)


def refuse_unknown_backbone(values: dict) -> None:
    """Refuse a backbone name no library knows before transformers, torch or the data are imported (issue 16).

    The check is `ModelArguments`' own (`backbone_arguments_problem`, over the one check of a name), run early on the
    values given: a typo in `--backbone` costs a fraction of a second, not the seconds of the imports that building the
    argument parser needs. A name given with `--model_name_or_path` (the checkpoint decides), or with a
    `--backbone_library` that is not one, is left to the full parser.
    """
    from ..core.backbone_names import FieldError, backbone_arguments_problem

    if values.get("backbone") is None:  # the default is a preset
        return
    problem = backbone_arguments_problem(values["backbone"], values.get("backbone_library"),
                                         values.get("model_name_or_path"))
    if problem is not None:
        raise FieldError("backbone", problem)  # what ModelArguments raises for it


def setup_logging(training_args) -> None:
    """Log as the HF examples do: this process's level for transformers, datasets and cdtm_hf's stage messages."""
    import datasets
    import transformers

    from ..logging import command_line_logging

    command_line_logging(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                         handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    level = training_args.get_process_log_level()
    for name in ("cdtm_hf", "cdtm-train"):
        logging.getLogger(name).setLevel(level)
    # issue 18: datasets logs through its own handler only (not a second time through the root's), and at WARNING
    # unless --log_level asks for info/debug: its INFO lines announce a local folder as "Downloading and preparing"
    asked = training_args.log_level if training_args.should_log else training_args.log_level_replica
    datasets.utils.logging.set_verbosity(level if asked in ("debug", "info") else max(level, logging.WARNING))
    if training_args.disable_tqdm:  # --disable_tqdm hides datasets' bars too (and cdtm_hf's: cdtm_hf.logging)
        datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def train(argv: list[str] | None = None) -> dict:
    """Run one fine-tuning (or, with `--do_train False`, one evaluation) and return its `test_results.json` dict."""
    model_args, data_args, training_args, run_args = parse(argv)
    writing_into(training_args.output_dir)
    setup_logging(training_args)
    from ..run import run_evaluation, run_finetuning

    if run_args.cv_folds and training_args.do_train:  # issue 19: K-fold cross-validation
        from ..experiments.cross_validation import run_cross_validation as run
    elif run_args.lr_sweep and training_args.do_train:  # issue 19: learning rates chosen on validation
        from ..experiments.lr_sweep import run_lr_sweep as run
    else:
        run = run_finetuning if training_args.do_train else run_evaluation
    try:
        report = run(model_args, data_args, training_args, run_args)
    except KeyboardInterrupt:  # issue 17: one line that says what is kept and how to resume
        raise RunInterrupted(_resume_hint(training_args)) from None
    except Exception as err:  # a full disk: the half-written checkpoint goes, the complete ones stay (issue 17)
        if no_space_message(err):
            from ..training.output_dir import drop_incomplete_checkpoints

            drop_incomplete_checkpoints(training_args.output_dir)
        raise
    if training_args.process_index != 0:  # one results line per run, not per rank (issue 18)
        return report
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items())
    print(f"test: {metrics}\nresults: {os.path.join(training_args.output_dir, 'test_results.json')}")
    return report


def _resume_hint(training_args) -> str:
    from ..training.output_dir import resume_hint

    return resume_hint(training_args.output_dir, training_args.do_train)


@command_line
def main(argv: list[str] | None = None) -> int:
    """The `cdtm-train` console script: `train(argv)`, exit status 0 (2: bad input, one line; 130: Ctrl-C)."""
    train(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
