"""timm's fine-tuning knobs (issue 18, item 4), each driven through examples/run_sft.py on a tiny imagefolder:
layer-wise lr decay, EMA of the weights (and its exact resume), mixup/cutmix with the soft-target loss, the
create_transform options, drop_path_rate / backbone_kwargs, channels_last, the grid fields and the records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cdtm_hf import CDTMForImageClassification
from cdtm_hf.cli.boundary import RunInterrupted
from cdtm_hf.core.configuration_cdtm import FieldError
from cdtm_hf.training import ema as ema_module
from cdtm_hf.training import trainer as trainer_module
from cdtm_hf.training.mixup import MixupLoss
from cdtm_hf.training.trainer import CDTMTrainer
from tests.helpers import write_imagefolder
from tests.test_run_sft import STAGES, TINY, run_sft

LR = 3e-4
DEPTH = 6  # timm test_vit: 6 blocks


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("knobs") / "data")


class Spy:
    """Collects what a run's trainer did, through wrappers that monkeypatch puts around library methods."""

    def __init__(self, monkeypatch):
        self.trainers, self.steps, self.ema_start, self.ema_end, self.batches = [], [], [], [], []
        self.train_transforms = []
        original_train = CDTMTrainer.train

        def train(trainer, *args, **kwargs):
            if trainer.stage is None:
                self.trainers.append(trainer)
            return original_train(trainer, *args, **kwargs)

        monkeypatch.setattr(CDTMTrainer, "train", train)
        begin, step = ema_module.ModelEmaCallback.on_train_begin, ema_module.ModelEmaCallback.on_step_end

        def on_train_begin(cb, args, state, control, model=None, **kw):
            self.ema_start.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            self.steps.append([])
            return begin(cb, args, state, control, model=model, **kw)

        def on_step_end(cb, args, state, control, model=None, **kw):
            self.steps[-1].append({k: v.detach().clone() for k, v in model.state_dict().items()})
            return step(cb, args, state, control, model=model, **kw)

        monkeypatch.setattr(ema_module.ModelEmaCallback, "on_train_begin", on_train_begin)
        monkeypatch.setattr(ema_module.ModelEmaCallback, "on_step_end", on_step_end)
        keep = trainer_module.keep_ema_if_better

        def keep_ema(runner, callback):
            self.ema_end.append({k: v.detach().clone() for k, v in callback.ema.module.state_dict().items()})
            return keep(runner, callback)

        monkeypatch.setattr(trainer_module, "keep_ema_if_better", keep_ema)
        from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor

        make_train = CDTMImageProcessor.train_transforms

        def train_transforms(processor, **options):
            transform = make_train(processor, **options)
            self.train_transforms.append(transform)
            return transform

        monkeypatch.setattr(CDTMImageProcessor, "train_transforms", train_transforms)
        compute = CDTMTrainer.compute_loss

        def compute_loss(trainer, model, inputs, *args, **kwargs):
            if model.training:
                pv = inputs["pixel_values"]
                conv = model.backbone.model.patch_embed.proj.weight
                self.batches.append({
                    "inputs_channels_last": pv.is_contiguous(memory_format=torch.channels_last),
                    "conv_channels_last": conv.is_contiguous(memory_format=torch.channels_last),
                })
            return compute(trainer, model, inputs, *args, **kwargs)

        monkeypatch.setattr(CDTMTrainer, "compute_loss", compute_loss)


KNOBS = ["--layer_decay", "0.5", "--drop_path_rate", "0.1", "--model_ema", "True", "--model_ema_decay", "0.5",
         "--model_ema_warmup", "True",
         "--vflip", "0.5", "--auto_augment", "rand-m9-mstd0.5-inc1", "--channels_last", "True"]


@pytest.fixture(scope="module")
def knob_run(data, tmp_path_factory):
    """One SFT run with the knobs on: (spy, output dir, report)."""
    out = tmp_path_factory.mktemp("knob_run") / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = Spy(monkeypatch)
        report = run_sft.main([*TINY, *STAGES, "--data_dir", str(data), "--output_dir", str(out), *KNOBS])
    return spy, out, report


def test_layer_decay_gives_timm_closed_form_lr_per_block(knob_run):
    """Stage 2 (backbone trained, lr LR/10): timm's layers of a ViT are the stem (0), blocks.i (i + 1) and the final
    norm, which timm's group_matcher puts in the last block's layer; the lr of layer l is lr * 0.5 ** (depth - l). So
    block i at lr * 0.5 ** (depth - 1 - i), the stem at lr * 0.5 ** depth, the last block, the norm, CDTM and the
    head at the stage's lr."""
    spy, _, report = knob_run
    trainer = spy.trainers[0]
    lr2 = LR / 10
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    names = dict(trainer.model.named_parameters())
    seen_blocks = set()
    for name, p in names.items():
        if name.startswith("backbone.model.blocks."):
            i = int(name.split(".")[3])
            seen_blocks.add(i)
            expected = lr2 * 0.5 ** (DEPTH - 1 - i)
        elif name.startswith(("backbone.model.patch_embed", "backbone.model.cls_token", "backbone.model.pos_embed")):
            expected = lr2 * 0.5 ** DEPTH
        else:  # backbone.model.norm, CDTM, head
            expected = lr2
        assert lr_of[id(p)] == pytest.approx(expected, rel=1e-9), name
    assert seen_blocks == set(range(DEPTH))
    assert [s["layer_decay"] for s in report["training"]["stages"]] == [None, 0.5]
    assert report["training"]["layer_decay"] == 0.5


def test_ema_weights_equal_a_hand_computed_ema(knob_run):
    spy, _, _ = knob_run
    assert len(spy.ema_end) == 2  # one EMA per stage
    for start, steps, end in zip(spy.ema_start, spy.steps, spy.ema_end):
        assert len(steps) == 3
        expected = {k: v.clone() for k, v in start.items()}
        for t, weights in enumerate(steps, 1):
            # timm's ModelEmaV3 with warmup: decay 0 at the first update (a copy), then
            # min(0.5, 1 - (1 + (t - 1)) ** (-2 / 3)): 0.370 at step 2, 0.5 from step 3 on
            d = 0.0 if t == 1 else min(0.5, 1 - t ** (-2 / 3))
            for k in expected:
                if expected[k].is_floating_point():
                    expected[k] = d * expected[k] + (1 - d) * weights[k]
                else:  # integer buffers are copied
                    expected[k] = weights[k].clone()
        for k in expected:
            torch.testing.assert_close(end[k], expected[k], rtol=0, atol=1e-6, msg=k)


def test_ema_record_and_kept_weights(knob_run):
    spy, out, report = knob_run
    stages = report["training"]["stages"]
    for stage in stages:
        ema = stage["ema"]
        assert set(ema) == {"decay", "warmup", "metric", "model_metric", "kept"}
        assert ema["decay"] == 0.5 and ema["warmup"] is True and ema["metric"] is not None
        assert json.loads((out / f"stage{stage['stage']}" / "ema_result.json").read_text()) == ema
    final = load_file(out / "model.safetensors")
    if stages[-1]["ema"]["kept"] and report["training"]["selected_stage"] == 2:
        for k, v in final.items():
            torch.testing.assert_close(v, spy.ema_end[1][k].contiguous(), msg=k)
    assert report["training"]["model_ema_decay"] == 0.5


def test_drop_path_rate_reaches_the_timm_blocks(knob_run):
    _, out, report = knob_run
    model = CDTMForImageClassification.from_pretrained(out)
    assert model.config.backbone_kwargs == {"drop_path_rate": 0.1}
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in model.backbone.model.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, DEPTH).tolist())  # timm's linear stochastic-depth rule
    assert report["training"]["drop_path_rate"] == 0.1
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["model"]["drop_path_rate"] == 0.1


def test_channels_last_model_and_inputs(knob_run):
    spy, _, report = knob_run
    assert spy.batches and all(b["inputs_channels_last"] and b["conv_channels_last"] for b in spy.batches)
    assert report["training"]["channels_last"] is True


def test_vflip_and_auto_augment_in_train_transform_not_eval(knob_run):
    spy, out, report = knob_run
    assert len(spy.train_transforms) == 1
    train = repr(spy.train_transforms[0])
    assert "RandomVerticalFlip(p=0.5)" in train and "RandAugment" in train
    from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor

    evaluation = repr(CDTMImageProcessor.from_pretrained(out).val_transforms)
    assert "Flip" not in evaluation and "RandAugment" not in evaluation
    training = report["training"]
    assert training["augment"] is True  # the options turn on timm's training transform
    assert (training["vflip"], training["auto_augment"], training["hflip"]) == (0.5, "rand-m9-mstd0.5-inc1", 0.5)


def test_card_lists_the_knobs(knob_run):
    _, out, _ = knob_run
    card = (out / "README.md").read_text()
    for row in ("`layer_decay` | 0.5", "`drop_path_rate` | 0.1", "`model_ema_decay` | 0.5", "`vflip` | 0.5",
                "`auto_augment` | rand-m9-mstd0.5-inc1", "`channels_last`"):
        assert row in card, row
    assert "`mixup`" not in card  # a knob that is off is not listed
    assert "EMA weights (validation)" in card  # the stage table: what each stage's EMA scored, and whether kept
    assert len(re.findall(r"\| \d\.\d{4}, (?:not )?kept \|", card)) == 2


def test_ema_checkpoint_state_is_pruned_with_the_optimizer_state(knob_run):
    _, out, _ = knob_run
    assert not list(out.glob("stage*/checkpoint-*/model_ema.safetensors"))


# ---- mixup / cutmix -------------------------------------------------------------------------------------------
def test_mixup_loss_is_soft_target_cross_entropy_and_eval_uses_hard_labels(data, tmp_path, monkeypatch):
    from timm.data import Mixup
    from timm.data.mixup import mixup_target
    from timm.loss import SoftTargetCrossEntropy

    checked = []
    compute = MixupLoss.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False):
        rng, torch_rng = np.random.get_state(), torch.get_rng_state()
        loss = compute(self, model, inputs, return_outputs)
        np.random.set_state(rng)
        torch.set_rng_state(torch_rng)
        reference = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=2)
        x, y = inputs["pixel_values"].clone(), inputs["labels"]
        n = len(x) - len(x) % 2
        mixed, target = reference(x[:n], y[:n])
        if n < len(x):
            mixed = torch.cat([mixed, x[n:]])
            target = torch.cat([target, mixup_target(y[n:], 2, 1.0, 0.1)])
        with torch.no_grad():
            expected = SoftTargetCrossEntropy()(model(pixel_values=mixed).logits, target)
        checked.append((float(loss.detach()), float(expected), len(x)))
        return loss

    monkeypatch.setattr(MixupLoss, "compute_loss", compute_loss)
    out = tmp_path / "out"
    argv = [*TINY, "--finetune_mode", "fft", "--num_train_epochs", "1", "--warmup_epochs", "0",
            "--per_device_train_batch_size", "5", "--logging_steps", "1", "--data_dir", str(data),
            "--output_dir", str(out), "--mixup", "0.8", "--cutmix", "1.0", "--label_smoothing_factor", "0.1",
            "--save_strategy", "no", "--load_best_model_at_end", "False"]
    report = run_sft.main(argv)
    assert [n for *_, n in checked] == [5, 5, 2]  # odd batches too
    for loss, expected, _ in checked:
        assert loss == pytest.approx(expected, rel=1e-5)
    # evaluation is never mixed: the test loss is the plain cross entropy of the final model on the hard labels,
    # smoothed by HF's label smoother (label_smoothing_factor 0.1)
    from cdtm_hf.core.image_processing_cdtm import CDTMImageProcessor
    from PIL import Image

    model = CDTMForImageClassification.from_pretrained(out).eval()
    processor = CDTMImageProcessor.from_pretrained(out)
    files = sorted((data / "test").glob("*/*.png"))
    pixels = torch.stack([processor.val_transforms(Image.open(f).convert("RGB")) for f in files])
    labels = torch.tensor([0 if f.parent.name == "benign" else 1 for f in files])
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert report["metrics"]["loss"] == pytest.approx(float(expected), rel=1e-4)
    assert report["training"]["mixup"] == 0.8 and report["training"]["cutmix"] == 1.0


def test_multi_label_mixup_is_bce_of_the_mixed_multi_hot_targets():
    from types import SimpleNamespace

    args = SimpleNamespace(mixup=0.8, cutmix=0.0, mixup_prob=1.0, mixup_switch_prob=0.5, mixup_mode="batch",
                           label_smoothing_factor=0.0)
    loss_fn = MixupLoss(args, num_classes=3, multi_label=True)
    torch.manual_seed(0)
    np.random.seed(0)
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]])
    lin = torch.nn.Linear(3 * 8 * 8, 3)

    class Model(torch.nn.Module):
        def forward(self, pixel_values):
            return {"logits": lin(pixel_values.flatten(1))}

    np.random.seed(1)
    loss = loss_fn.compute_loss(Model(), {"pixel_values": x, "labels": y})
    np.random.seed(1)
    np.random.rand()  # timm's batch mixup: a draw against mixup_prob, then lambda from Beta(alpha, alpha)
    lam = np.random.beta(0.8, 0.8)
    mixed = x[:4] * lam + x[:4].flip(0) * (1 - lam)
    target = torch.cat([y[:4].float() * lam + y[:4].flip(0).float() * (1 - lam), y[4:].float()])
    logits = lin(torch.cat([mixed, x[4:]]).flatten(1))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


# ---- EMA: an interrupted run resumes exactly --------------------------------------------------------------------
def test_interrupted_and_resumed_equals_uninterrupted_ema_mixup_augment_included(data, tmp_path, monkeypatch):
    stages = [*TINY, "--stage1_epochs", "1", "--stage2_epochs", "2", "--warmup_epochs", "0",
              "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--model_ema", "--model_ema_decay",
              "0.5", "--data_dir", str(data), "--keep_checkpoints", "True", "--save_total_limit", "5",
              "--mixup", "0.8", "--cutmix", "1.0", "--vflip", "0.5", "--layer_decay", "0.75"]  # random, restored too
    straight = run_sft.main([*stages, "--output_dir", str(tmp_path / "a")])

    save = ema_module.ModelEmaCallback.on_save

    def killed_on_save(cb, args, state, control, **kwargs):
        save(cb, args, state, control, **kwargs)
        if Path(args.output_dir).name == "stage2":
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(ema_module.ModelEmaCallback, "on_save", killed_on_save)
        with pytest.raises(RunInterrupted, match="--resume_from_checkpoint True"):  # Ctrl-C, as the CLI reports it
            run_sft.main([*stages, "--output_dir", str(tmp_path / "b")])
    assert (tmp_path / "b" / "stage2" / "checkpoint-3" / "model_ema.safetensors").is_file()
    assert not (tmp_path / "b" / "stage2" / "checkpoint-6").exists()
    resumed = run_sft.main([*stages, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "True"])

    assert resumed["training"]["stages"] == straight["training"]["stages"]
    for name in ("model.safetensors", "stage2/checkpoint-6/model_ema.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=f"{name}: {k}")


# ---- the fields: checks, the grid, open_clip ---------------------------------------------------------------------
def test_every_knob_is_a_grid_field():
    from cdtm_hf.experiments.fields import build_arguments, coerce_value

    values = {"layer_decay": "0.75", "model_ema": "true", "model_ema_decay": 0.999, "model_ema_warmup": True,
              "mixup": 0.8, "cutmix": "1.0", "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "mixup_mode": "pair",
              "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "scale": [0.5, 1.0], "ratio": [0.75, 1.333],
              "hflip": 0.5, "vflip": 0.5, "color_jitter": 0.3, "channels_last": "yes", "drop_path_rate": "0.1",
              "backbone_kwargs": {"drop_rate": 0.1}, "label_smoothing_factor": 0.1}
    coerced = {k: coerce_value(k, v) for k, v in values.items()}
    assert coerced["layer_decay"] == 0.75 and coerced["model_ema"] is True and coerced["scale"] == [0.5, 1.0]
    model, _, training, _ = build_arguments({**coerced, "backbone": "test_vit", "data_dir": "x", "output_dir": "o",
                                             "report_to": "none", "use_cpu": True})
    assert model.backbone_kwargs == {"drop_rate": 0.1} and model.drop_path_rate == 0.1
    assert (training.layer_decay, training.model_ema, training.mixup_mode, training.channels_last) == (
        0.75, True, "pair", True)
    assert training.augment is True


@pytest.mark.parametrize(("argv", "field"), [
    (["--layer_decay", "1.5"], "layer_decay"),
    (["--vflip", "2"], "vflip"),
    (["--mixup", "-1"], "mixup"),
    (["--mixup_mode", "row"], "mixup_mode"),
    (["--auto_augment", "randaug"], "auto_augment"),
    (["--scale", "0.9", "0.1"], "scale"),
    (["--drop_path_rate", "1.0"], "drop_path_rate"),
    (["--backbone_kwargs", "{not json"], "backbone_kwargs"),
    (["--backbone_kwargs", "[1, 2]"], "backbone_kwargs"),
    (["--backbone", "vitb16.laion400m", "--backbone_library", "open_clip", "--drop_path_rate", "0.1"],
     "drop_path_rate"),
])
def test_bad_knob_values_are_refused_before_any_work(argv, field, tmp_path):
    from cdtm_hf.cli.train import parse

    with pytest.raises(FieldError) as err:
        parse([*TINY, "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), *argv])
    assert err.value.field == field


def test_backbone_kwargs_json_reaches_the_backbone(tmp_path):
    from cdtm_hf.cli.train import parse
    from cdtm_hf.training.model_builder import build_model

    model_args, *_ = parse([*TINY, "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"),
                            "--backbone_kwargs", '{"proj_drop_rate": 0.25}', "--drop_path_rate", "0.05"])
    model = build_model(model_args, ["a", "b"])
    assert model.config.backbone_kwargs == {"proj_drop_rate": 0.25, "drop_path_rate": 0.05}
    assert model.backbone.model.blocks[0].attn.proj_drop.p == 0.25
    assert model.backbone.model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.05)


def test_layer_decay_refuses_an_open_clip_vit(tiny_open_clip, tmp_path):
    from cdtm_hf import CDTMConfig
    from cdtm_hf.training.optim import backbone_layer_scales

    config = CDTMConfig(backbone=tiny_open_clip, backbone_library="open_clip", image_size=32, num_centers=3,
                        num_labels=2)
    model = CDTMForImageClassification.from_backbone(config, pretrained=False)
    with pytest.raises(ValueError, match="layer_decay needs a timm backbone"):
        backbone_layer_scales(model, 0.75)
    # refused when the trainer is built, not when SFT stage 2 starts to train the backbone
    from cdtm_hf.training.arguments import CDTMTrainingArguments

    args = CDTMTrainingArguments(output_dir=str(tmp_path), layer_decay=0.75, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="open_clip ViT"):
        CDTMTrainer(model=model, args=args)


def test_better_ema_weights_are_kept_and_selected(data, tmp_path, monkeypatch):
    """When the EMA weights beat the stage's best checkpoint on validation they become the stage's model: stage 1's
    EMA weights are stage1_best (where stage 2 starts), stage 2's are the saved model, and the records say so."""
    kept = []
    keep = trainer_module.keep_ema_if_better

    def keep_ema(runner, callback):
        kept.append({k: v.detach().clone() for k, v in callback.ema.module.state_dict().items()})
        return keep(runner, callback)

    monkeypatch.setattr(trainer_module, "keep_ema_if_better", keep_ema)
    # the EMA weights score 2.0 (above any F1), the model its own best
    monkeypatch.setattr(ema_module, "_metric", lambda trainer, description: 2.0 if "EMA" in description else None)
    out = tmp_path / "out"
    report = run_sft.main([*TINY, *STAGES, "--data_dir", str(data), "--output_dir", str(out), "--model_ema", "True",
                           "--model_ema_decay", "0.5"])
    stages = report["training"]["stages"]
    assert [s["ema"]["kept"] for s in stages] == [True, True]
    assert [s["best_metric"] for s in stages] == [2.0, 2.0]
    assert [s["best_checkpoint"] for s in stages] == ["stage1_best", None]
    assert report["training"]["selected_stage"] == 2
    for folder, weights in ((out / "stage1_best", kept[0]), (out, kept[1])):
        saved = load_file(folder / "model.safetensors")
        for k, v in saved.items():
            torch.testing.assert_close(v, weights[k].contiguous(), rtol=0, atol=0, msg=f"{folder.name}: {k}")


def test_a_grid_takes_the_knobs_and_names_their_recipe(tmp_path):
    from cdtm_hf.experiments import GridError, load_grid

    grid = {"name": "knobs", "base": {"dataset": "imagefolder", "data_dir": "unused", "backbone": "test_vit",
                                      "backbone_pretrained": False, "report_to": "none", "scale": [0.5, 1.0],
                                      "channels_last": "true", "backbone_kwargs": {"proj_drop_rate": 0.1}},
            "axes": {"recipe": ["sft_cdtm", "sft_cdtm_timm"], "re_prob": [None, 0.25]}, "seeds": [0],
            "output_dir": str(tmp_path)}
    loaded = load_grid(grid, check_paths=False)
    # channels_last and backbone_kwargs are on in every cell (and test_vit starts from random weights here)
    assert [c.recipe for c in loaded.cells] == ["sft_cdtm_random_init_timm"] * 4
    model_args, _, training_args, _ = loaded.arguments(loaded.cells[3], seed=0)
    assert (training_args.layer_decay, training_args.model_ema, training_args.mixup, training_args.vflip) == (
        0.75, True, 0.8, 0.5)
    assert training_args.re_prob == 0.25 and training_args.augment is True
    assert training_args.scale == [0.5, 1.0] and model_args.drop_path_rate == 0.1
    plain = load_grid({**grid, "base": {k: v for k, v in grid["base"].items()
                                        if k not in ("scale", "channels_last", "backbone_kwargs")},
                       "axes": {"recipe": ["sft_cdtm"]}}, check_paths=False)
    assert plain.cells[0].recipe == "sft_cdtm_random_init"  # no knob on: the paper's recipe, compared with its row
    with pytest.raises(GridError, match=r"base.vflip: .*vflip is a probability"):
        load_grid({**grid, "base": {**grid["base"], "vflip": 1.5}}, check_paths=False)
