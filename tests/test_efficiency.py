"""The efficiency CLI prints Table VII's rows for ViT-B and ConvNeXt-B."""

from cdtm_hf import CDTMConfig
from cdtm_hf.cli.efficiency import main
from cdtm_hf.evaluation.efficiency import count_flops, efficiency_row


def test_cli_prints_vit_and_convnext_rows_beside_table_vii(capsys):
    main(["--backbone", "vitb16.laion2b", "convnextb.laion2b"])
    out = capsys.readouterr().out
    vit = next(line for line in out.splitlines() if line.startswith("| vitb16.laion2b"))
    cnx = next(line for line in out.splitlines() if line.startswith("| convnextb.laion2b"))
    assert "17,074,368" in vit and "102.84" in vit and "+1.04" in vit  # ours, then the paper's
    assert "10,479,020" in cnx and "99.32" in cnx and "+0.46" in cnx
    # measured CDTM overhead within 5% of the paper's +1.04 / +0.46 GFLOPs (multiply-accumulates)
    assert "+1.08" in vit and "+0.47" in cnx


def test_flop_counter_sees_the_cdtm():
    row = efficiency_row(CDTMConfig(backbone="test_vit", image_size=64, num_labels=2, num_centers=4))
    assert row.gmacs > row.base_gmacs > 0
    assert 0 < row.lp_trainable_pct < 100
    config = CDTMConfig(backbone="test_vit", image_size=64, num_labels=2, num_centers=4)
    from cdtm_hf import CDTMForImageClassification

    assert count_flops(CDTMForImageClassification(config), 64) == row.gflops * 1e9


def test_flops_of_an_mha_head_model_leave_requires_grad_as_it_was():
    from cdtm_hf import CDTMForImageClassification

    model = CDTMForImageClassification(CDTMConfig(backbone="test_vit", image_size=64, num_labels=2, num_centers=4,
                                                  head_type="mha", mha_num_heads=4))
    model.freeze_backbone(True)
    before = [p.requires_grad for p in model.parameters()]
    assert count_flops(model, 64) > 0
    assert [p.requires_grad for p in model.parameters()] == before
