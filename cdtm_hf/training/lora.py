"""A parameter-efficient SFT stage 2 through `peft`: LoRA adapters on the backbone, CDTM and the head trained fully.

`--stage2_method lora` puts LoRA adapters (`peft.LoraModel`, injected in place into the backbone's own model) on the
backbone's linear layers of one family:

    timm ViT-like (ViT, DeiT, EVA, the pathology presets)  `qkv`, `proj`, `fc1`, `fc2` of the blocks
    timm ConvNeXt                                          `fc1`, `fc2`: the blocks' pointwise MLP (a Linear in
                                                           timm's ConvNeXt); the depthwise 7x7 convolutions, the
                                                           stem and the downsampling layers stay frozen
    transformers (ViT, DINOv2, ...)                        `query`, `key`, `value`, `dense` (transformers 5 names
                                                           them `q_proj`, `k_proj`, `v_proj`, `o_proj`, `fc1`,
                                                           `fc2`: both sets are targets)
    open_clip ViT                                          `out_proj`, `c_fc`, `c_proj` (the fused in_proj of its
                                                           `nn.MultiheadAttention` has no Linear to adapt)

Only `nn.Linear` layers inside the backbone take adapters (never CDTM's own `proj`/`fc1`/`fc2`, never a patch-
embedding convolution). The base weights are frozen; CDTM and the head keep training. At the end of the run the
adapters are merged into the base weights (`merge_and_unload`), so the saved model is a plain CDTM checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["LORA_TARGETS", "apply_lora", "lora_target_modules", "merge_lora", "method_record", "trainable_parameters",
           "uses_lora"]

# The leaf names of the adapted linear layers, per kind of backbone (BackboneAdapter's library).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "timm": ("qkv", "proj", "fc1", "fc2"),
    # the classic ViT/BERT names, and those transformers 5 gives ViT/DINOv2 (q_proj, ..., mlp.fc1/fc2)
    "transformers": ("query", "key", "value", "dense", "q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
    "open_clip": ("out_proj", "c_fc", "c_proj"),
}
_TUNER = "_cdtm_lora_tuner"  # the peft tuner of a model in a LoRA stage (a plain attribute, not a submodule)


def _peft():
    try:
        import peft
    except ImportError as err:  # pragma: no cover - exercised only where peft is absent
        raise ImportError("--stage2_method lora needs peft: pip install 'cdtm_hf[lora]' (or pip install peft)") from err
    return peft


def lora_target_modules(model: nn.Module, names: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """The full names (inside `model.backbone.model`) of the Linear layers that take LoRA adapters.

    Args:
        model (`CDTMForImageClassification`): the model.
        names (`list[str]`, *optional*): leaf names to adapt; default `LORA_TARGETS` of the backbone's library.
    """
    backbone = model.backbone
    leaves = tuple(names) if names else LORA_TARGETS.get(backbone.library, LORA_TARGETS["timm"])
    targets = [n for n, m in backbone.model.named_modules()
               if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in leaves]
    if not targets:
        raise ValueError(
            f"no Linear layer named {', '.join(leaves)} in backbone {backbone.name!r}: LoRA has nothing to adapt; "
            "pass --lora_target_modules with the backbone's layer names, or --stage2_method full"
        )
    return targets


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of `model` as it is now (adapters included while they are injected)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)



def uses_lora(stage: Any, args: Any) -> bool:
    """Whether `stage` (a `Stage`) trains the backbone through LoRA adapters: SFT's stage 2 with stage2_method lora."""
    return (not stage.frozen_backbone and args.finetune_mode == "sft" and stage.index > 1
            and args.stage2_method == "lora")


def apply_lora(model: nn.Module, args: Any) -> dict[str, Any]:
    """Inject LoRA adapters into the backbone (base weights frozen, CDTM and head untouched); return what was done.

    Args:
        model (`CDTMForImageClassification`): the model of the stage; its backbone has just been unfrozen.
        args (`CDTMTrainingArguments`): `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`.
    """
    peft = _peft()
    if getattr(model, _TUNER, None) is not None:
        raise RuntimeError("LoRA adapters are already injected into this model")
    names = [n.strip() for n in (args.lora_target_modules or "").split(",") if n.strip()] or None
    targets = lora_target_modules(model, names)
    config = peft.LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                             target_modules=targets, bias="none")
    # LoraModel injects the adapters in place into the backbone's model and freezes its other parameters
    tuner = peft.LoraModel(model.backbone.model, config, "default")
    object.__setattr__(model, _TUNER, tuner)  # not a submodule: the state dict keeps the model's own names
    trainable, total = trainable_parameters(model)
    record = {"method": "lora", "lora_r": int(args.lora_r), "lora_alpha": float(args.lora_alpha),
              "lora_dropout": float(args.lora_dropout), "lora_layers": len(targets),
              "trainable_parameters": trainable, "trainable_share": trainable / total}
    logger.info("LoRA stage: r=%d, alpha=%g on %d backbone layers; %d of %d parameters trainable (%.2f%%)",
                args.lora_r, args.lora_alpha, len(targets), trainable, total, 100 * trainable / total)
    return record


def merge_lora(model: nn.Module) -> bool:
    """Merge the adapters into the backbone's weights and remove them (`merge_and_unload`); False if none."""
    tuner = getattr(model, _TUNER, None)
    if tuner is None:
        return False
    model.backbone.model = tuner.merge_and_unload()
    object.__setattr__(model, _TUNER, None)
    return True


def method_record(model: nn.Module, frozen_backbone: bool, lora: dict[str, Any] | None) -> dict[str, Any]:
    """A stage record's method keys: how the backbone trained and the share of the model's parameters that trained.

    Args:
        model (`CDTMForImageClassification`): the model.
        frozen_backbone (`bool`): the stage froze the backbone.
        lora (`dict`, *optional*): what `apply_lora` returned for the stage, if it used LoRA.
    """
    if lora is not None:
        return {"method": "lora", "lora_r": lora["lora_r"], "trainable_parameters": lora["trainable_parameters"],
                "trainable_share": lora["trainable_share"]}
    total = model.num_parameters()
    trainable = total - model.backbone_parameters() if frozen_backbone else total
    return {"method": "frozen" if frozen_backbone else "full", "lora_r": None,
            "trainable_parameters": trainable, "trainable_share": trainable / total}
