"""LoRA stage 2 and gradient checkpointing (issue 20): what trains, the merge into a plain checkpoint, exact resume
inside a LoRA stage, and checkpointing's loss and gradients against a run without it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from cdtm_hf import CDTMConfig, CDTMForImageClassification
from cdtm_hf.core.configuration_cdtm import FieldError
from cdtm_hf.training.arguments import CDTMTrainingArguments
from cdtm_hf.training.lora import apply_lora, lora_target_modules, merge_lora
from tests.test_trainer import Kill, make_dataset, make_model, make_trainer, snapshot

LORA = dict(stage2_method="lora", lora_r=2, lora_alpha=4)


def test_lora_targets_per_family():
    vit = make_model()
    assert {n.rsplit(".", 1)[-1] for n in lora_target_modules(vit)} == {"qkv", "proj", "fc1", "fc2"}
    assert all(n.startswith("blocks.") for n in lora_target_modules(vit))  # never patch_embed.proj, never CDTM
    convnext = CDTMForImageClassification(CDTMConfig(backbone="test_convnext", image_size=32, num_centers=2))
    assert {n.rsplit(".", 1)[-1] for n in lora_target_modules(convnext)} == {"fc1", "fc2"}  # pointwise MLP only
    hf = CDTMForImageClassification(CDTMConfig(
        backbone="vit", backbone_library="transformers", image_size=32, num_centers=2,
        backbone_kwargs={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                         "image_size": 32, "patch_size": 8}))
    hf_targets = {n.rsplit(".", 1)[-1] for n in lora_target_modules(hf)}  # transformers 5 renamed query/key/value
    assert hf_targets in ({"query", "key", "value", "dense"}, {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"})


def test_merged_model_equals_the_adapted_one_and_saves_plain(tmp_path):
    model = make_model().eval()
    model.freeze_backbone(False)
    args = CDTMTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **LORA)
    record = apply_lora(model, args)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or not n.startswith("backbone.") for n in trainable)
    assert any(n.startswith("transfer.") for n in trainable) and any(n.startswith("head.") for n in trainable)
    assert 0 < record["trainable_share"] < 1
    with torch.no_grad():  # a trained adapter: B != 0
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        adapted = model(pixel_values=x).logits
    assert merge_lora(model)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).logits, adapted, rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path / "saved")
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora_" in k or "base_layer" in k]
    again = CDTMForImageClassification.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        assert torch.equal(again(pixel_values=x).logits, model(pixel_values=x).logits)


def test_sft_with_lora_stage2_records_method_and_share(tmp_path):
    model = make_model()
    trainer = make_trainer(model, tmp_path, stage2_from_best=False, load_best_model_at_end=False, **LORA)
    trainer.train()
    stage1_backbone = snapshot(CDTMForImageClassification.from_pretrained(tmp_path / "stage1_best").backbone)
    first, second = trainer.stage_records
    assert (first["method"], second["method"], second["lora_r"]) == ("frozen", "lora", 2)
    assert second["trainable_share"] < 0.5 and second["trainable_parameters"] > first["trainable_parameters"]
    after = snapshot(model.backbone)  # merged: plain names, and the adapters moved the base weights
    assert after.keys() == stage1_backbone.keys()
    assert any(not torch.equal(after[k], stage1_backbone[k]) for k in after if k.endswith("qkv.weight"))
    assert all(torch.equal(after[k], stage1_backbone[k]) for k in after if "norm" in k)  # LayerNorms stayed frozen


def test_kill_in_lora_stage2_and_resume_equals_uninterrupted(tmp_path):
    overrides = dict(stage1_epochs=1, stage2_epochs=2, **LORA)
    straight = make_model()
    straight_trainer = make_trainer(straight, tmp_path / "a", **overrides)
    straight_trainer.train()
    victim = make_trainer(make_model(), tmp_path / "b", **overrides)
    victim.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        victim.train()
    resumed = make_model(seed=1)  # different init: everything comes from the LoRA-stage checkpoint
    resumed_trainer = make_trainer(resumed, tmp_path / "b", **overrides)
    resumed_trainer.train(resume_from_checkpoint=True)
    assert resumed_trainer.stage_records == straight_trainer.stage_records
    a, b = snapshot(straight), snapshot(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=key)


def test_lora_needs_sft():
    with pytest.raises(FieldError, match="stage2_method lora adapts SFT's stage 2"):
        CDTMTrainingArguments(output_dir="unused", finetune_mode="fft", report_to="none", use_cpu=True, **LORA)


# ---------------------------------------------------------------------------------------------------------------
# gradient checkpointing: the same loss and gradients, recomputed
def _loss_and_grads(model, checkpointing: bool):
    model.train()
    model.freeze_backbone(False)
    if checkpointing:
        model.activation_checkpointing_enable()
    else:
        model.activation_checkpointing_disable()
    batch = make_dataset(4, 0)[:4]
    model.zero_grad()
    loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone", ["timm", "transformers"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(backbone):
    model = make_model() if backbone == "timm" else CDTMForImageClassification(CDTMConfig(
        backbone="vit", backbone_library="transformers", image_size=32, num_labels=2, num_centers=3,
        backbone_kwargs={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 64, "image_size": 32, "patch_size": 8}))
    plain_loss, plain = _loss_and_grads(model, False)
    assert not model.is_activation_checkpointing
    ckpt_loss, ckpt = _loss_and_grads(model, True)
    assert model.is_activation_checkpointing
    assert ckpt_loss == pytest.approx(plain_loss, abs=1e-5)
    assert plain.keys() == ckpt.keys() and any(n.startswith("backbone.") for n in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_checkpointing_flag_runs_stage2(tmp_path):
    """`--gradient_checkpointing True` through CDTMTrainer: stage 2 loss equals the run without it."""
    losses = {}
    for flag in (False, True):
        trainer = make_trainer(make_model(), tmp_path / str(flag), gradient_checkpointing=flag)
        trainer.train()
        state = json.loads(next((tmp_path / str(flag) / "stage2").glob("checkpoint-*/trainer_state.json")).read_text())
        losses[flag] = [e["loss"] for e in state["log_history"] if "loss" in e]
        assert trainer.model.is_activation_checkpointing is flag
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_no_split_modules_name_the_backbone_block_and_cdtm_block():
    assert set(make_model()._no_split_modules) == {"Block", "CDTMBlock"}  # transformers keeps it as a set
    convnext = CDTMForImageClassification(CDTMConfig(backbone="test_convnext", image_size=32, num_centers=2))
    assert set(convnext._no_split_modules) == {"ConvNeXtBlock", "CDTMBlock"}




def test_run_sft_with_lora_saves_a_plain_checkpoint_and_cards_the_method(tmp_path):
    """examples/run_sft.py --stage2_method lora: the report, the card and the saved weights say what ran."""
    from tests.helpers import write_imagefolder
    from tests.test_run_sft import STAGES, TINY, run_sft

    data = write_imagefolder(tmp_path / "data")
    out = tmp_path / "out"
    report = run_sft.main([*TINY, *STAGES, "--data_dir", str(data), "--output_dir", str(out),
                           "--stage2_method", "lora", "--lora_r", "2"])
    stage2 = report["training"]["stages"][1]
    assert (stage2["method"], stage2["lora_r"]) == ("lora", 2) and 0 < stage2["trainable_share"] < 1
    assert report["training"]["stage2_method"].startswith("lora (r=2, alpha=16")
    card = (out / "README.md").read_text()
    assert f"{100 * stage2['trainable_share']:.2f} % of the parameters trained" in card
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora_" in k or "base_layer" in k]
    CDTMForImageClassification.from_pretrained(out)  # a plain CDTM checkpoint
