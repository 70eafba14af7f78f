"""Efficiency report in the columns of Table VII: params (M), GFLOPs at the model's input size, % trainable.

FLOPs come from torch's own counter (`torch.utils.flop_counter.FlopCounterMode`), not a hand formula. The paper's
"Flops(G)" column counts multiply-accumulates (thop convention), so the report shows GMACs = FLOPs / 2 beside it.

    cdtm-efficiency --backbone vitb16.laion2b convnextb.laion2b    # cdtm_hf.cli.efficiency
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..core.configuration_cdtm import CDTMConfig
from ..core.modeling_cdtm import CDTMForImageClassification
from ..paper.numbers import paper_row
from .reporting import format_number, markdown_table

@dataclass
class EfficiencyRow:
    backbone: str
    params_m: float  # whole model, CDTM included
    base_params_m: float  # the backbone + head without CDTM
    added_params: int  # exactly what CDTM adds
    gmacs: float  # multiply-accumulates (the paper's "Flops" convention)
    base_gmacs: float
    gflops: float  # torch FLOP counter (2 per multiply-accumulate)
    lp_trainable_pct: float  # % of parameters trained in LP / SFT stage 1 (CDTM + head)
    sft_stage2_trainable_pct: float  # % trained in SFT stage 2 / FFT (everything)


def count_flops(model: torch.nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass on a single image, by torch's FLOP counter."""
    was_training = model.training
    requires_grad = [p.requires_grad for p in model.parameters()]
    param = next(model.parameters())
    pixel_values = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    # No parameter may require grad: the counter rejects an expanded grad-requiring tensor under no_grad (MHA query).
    model.eval().requires_grad_(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(pixel_values=pixel_values)
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        model.train(was_training)
    return counter.get_total_flops()


def efficiency_row(config: CDTMConfig, name: str | None = None) -> EfficiencyRow:
    """Build the model of `config` and its no-CDTM twin (random weights) and measure both."""
    model = CDTMForImageClassification(config)
    base_config = CDTMConfig(**{**config.to_dict(), "use_cdtm": False, "backbone_pretrained": False})
    base = CDTMForImageClassification(base_config)
    total, base_total = model.num_parameters(), base.num_parameters()
    trainable_lp = total - model.backbone_parameters()
    flops, base_flops = count_flops(model, config.image_size), count_flops(base, config.image_size)
    return EfficiencyRow(
        backbone=name or config.backbone,
        params_m=total / 1e6,
        base_params_m=base_total / 1e6,
        added_params=model.added_parameters(),
        gmacs=flops / 2e9,
        base_gmacs=base_flops / 2e9,
        gflops=flops / 1e9,
        lp_trainable_pct=100.0 * trainable_lp / total,
        sft_stage2_trainable_pct=100.0,
    )


def efficiency_summary(model: CDTMForImageClassification) -> dict[str, float | int]:
    """The efficiency of one built model, as a run records it: GMACs, params (M), CDTM's params, LP trainable %."""
    total = model.num_parameters()
    return {
        "gmacs": round(count_flops(model, model.config.image_size) / 2e9, 3),
        "params_m": round(total / 1e6, 3),
        "added_params": model.added_parameters(),
        "lp_trainable_pct": round(100 * (total - model.backbone_parameters()) / total, 2),
    }


TABLE_HEADERS = ("Backbone", "Params (M)", "+CDTM params", "GMACs", "+GMACs (CDTM)", "LP trainable", "SFT-2 trainable",
                 "Paper params (M)", "Paper +GFLOPs", "Paper LP trainable")


def format_table(rows: list[EfficiencyRow]) -> str:
    """A markdown table with our measurement and, where the paper reports one, Table VII beside it."""
    cells = []
    for r in rows:
        paper = paper_row("table7", r.backbone, "sft_cdtm") or {}
        added_paper = paper["gflops"] - paper["base_gflops"] if paper else None
        cells.append([
            r.backbone, format_number(r.params_m), f"{r.added_params:,}", format_number(r.gmacs),
            "+" + format_number(r.gmacs - r.base_gmacs), format_number(r.lp_trainable_pct, 1, suffix="%"),
            format_number(r.sft_stage2_trainable_pct, 0, suffix="%"), format_number(paper.get("params_m")),
            "+" + format_number(added_paper) if added_paper is not None else None,
            format_number(paper.get("lp_trainable_pct"), 1, suffix="%"),
        ])
    return markdown_table(TABLE_HEADERS, cells)


__all__ = ["EfficiencyRow", "count_flops", "efficiency_row", "efficiency_summary", "format_table"]
