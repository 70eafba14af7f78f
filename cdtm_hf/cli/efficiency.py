"""`cdtm-efficiency`: params, GMACs and the trainable share of CDTM models (Table VII), beside the paper's.

    cdtm-efficiency --backbone vitb16.laion2b convnextb.laion2b [--json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..core.configuration_cdtm import CDTM_VARIANTS, DEFAULT_CDTM_VARIANT
from .boundary import command_line, one_line_errors

__all__ = ["main"]


@command_line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdtm-efficiency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", nargs="+", default=["vitb16.laion2b", "convnextb.laion2b"],
                        help="preset names or timm model names")
    parser.add_argument("--backbone_library", default=None, help="timm or open_clip (presets set it)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_labels", type=int, default=4)
    parser.add_argument("--num_centers", type=int, default=300)
    parser.add_argument("--cdtm_variant", default=DEFAULT_CDTM_VARIANT, choices=list(CDTM_VARIANTS))
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    one_line_errors(parser)
    args = parser.parse_args(argv)
    from ..core.configuration_cdtm import CDTMConfig
    from ..evaluation.efficiency import efficiency_row, format_table

    rows = []
    for name in args.backbone:
        config = CDTMConfig(
            backbone=name, backbone_library=args.backbone_library, image_size=args.image_size,
            num_labels=args.num_labels, num_centers=args.num_centers, cdtm_variant=args.cdtm_variant,
        )
        rows.append(efficiency_row(config, name=name))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
