"""`cdtm-hub`: write a checkpoint's model card, push a checkpoint to the Hub, (re)write the published recipes' cards.

    cdtm-hub card outputs/run1 [--repo_id org/name]
    cdtm-hub push outputs/run1 org/name [--private] [--token hf_...]
    cdtm-hub recipe-cards [--out model_cards]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .boundary import OneLineParser, command_line, one_line_errors

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cdtm-hub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    push = sub.add_parser("push", help="validate a checkpoint folder and upload it to the Hub")
    push.add_argument("checkpoint_dir")
    push.add_argument("repo_id", help="namespace/name of the model repository")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", default=None, help="Hub token (default: `hf auth login`'s or HF_TOKEN)")
    push.add_argument("--commit_message", default=None)
    push.add_argument("--no_card", action="store_true", help="do not write README.md when it is missing")
    card = sub.add_parser("card", help="write README.md (the model card) into a checkpoint folder")
    card.add_argument("checkpoint_dir")
    card.add_argument("--repo_id", default=None, help="the Hub repository the card is for")
    card.add_argument("--license", default="apache-2.0")
    card.add_argument("--no_paper_reference", action="store_true",
                      help="leave out the paper's numbers for the same setting")
    for name in ("recipe-cards", "recipes"):  # "recipes" is the older name of the same command
        recipes = sub.add_parser(name, help="(re)write model_cards/<name>/README.md of the published recipes")
        recipes.add_argument("--out", default="model_cards")
    return one_line_errors(parser)


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cdtm-hub`: `push`, `card` and `recipe-cards`; returns the exit status (2 on a user error)."""
    args = _parser().parse_args(argv)
    from huggingface_hub.errors import HfHubHTTPError

    from ..hub.cards import load_report, write_model_card
    from ..hub.checkpoint import CheckpointError
    from ..hub.push import HubUnreachableError, InvalidRepoIdError, MissingTokenError, push_checkpoint
    from ..hub.recipe_cards import write_recipe_cards
    from ..paper.recipes import paper_reference_for

    try:
        if args.command == "push":
            url = push_checkpoint(args.checkpoint_dir, args.repo_id, token=args.token, private=args.private,
                                  commit_message=args.commit_message, create_card=not args.no_card)
            print(f"pushed {args.checkpoint_dir} to {url}")
        elif args.command == "card":
            report = load_report(Path(args.checkpoint_dir), None)
            reference = None if args.no_paper_reference else paper_reference_for(report)
            path = write_model_card(args.checkpoint_dir, report, repo_id=args.repo_id, paper_reference=reference,
                                    license=args.license)
            print(f"wrote {path}")
        else:
            for path in write_recipe_cards(args.out):
                print(f"wrote {path}")
    except (CheckpointError, InvalidRepoIdError, MissingTokenError, HubUnreachableError, HfHubHTTPError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
