"""The command-line boundary: how every console entry point reports bad input, an interrupt and a full disk.

A user error (the package's own error types and the standard input errors: `ValueError`, `OSError` such as
`FileNotFoundError`/`FileExistsError`/`PermissionError`, the data errors, `BackboneWeightsError`, the Hub errors,
`SafetensorError`, a YAML error) is printed as one line, `error: <message>`, on stderr, and the command exits 2.
`--debug` (anywhere on the command line) or `CDTM_DEBUG=1` shows the full traceback instead. Any other exception
keeps its traceback: that is a bug, and the traceback is what a bug report needs.

Ctrl-C stops the command with one line (a run names the command that resumes it) and exit status 130. A full disk
(ENOSPC) gives one line naming the folder and what could not be written.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "DEBUG_ENV", "OneLineParser", "RunInterrupted", "command_line", "is_user_error", "no_space_message",
    "one_line", "one_line_errors", "refuse_unknown_flags", "writing_into",
]

#: the environment variable that, set to anything but "" or "0", shows the full traceback of a user error
DEBUG_ENV = "CDTM_DEBUG"

#: (module, class) of the package's and its libraries' user-facing errors; looked up only when that module is
#: already imported (an error of a module that was never imported cannot have been raised)
_NAMED_ERRORS = (
    ("cdtm_hf.data.errors", "MedicalDatasetError"),  # MissingDependencyError is an ImportError
    ("cdtm_hf.core.backbones", "BackboneWeightsError"),
    ("cdtm_hf.hub.push", "MissingTokenError"),
    ("cdtm_hf.hub.push", "HubUnreachableError"),
    ("huggingface_hub.errors", "HfHubHTTPError"),
    ("huggingface_hub.errors", "OfflineModeIsEnabled"),
    ("safetensors", "SafetensorError"),
    ("yaml", "YAMLError"),
)

#: what every command's --help says about the boundary
DEBUG_HELP = (f"Bad input is reported on one line (exit status 2); add --debug or set {DEBUG_ENV}=1 for the full "
              "traceback.")

_output_dir: list[str] = []


def writing_into(output_dir: str | os.PathLike | None) -> None:
    """Record the folder a command writes into: a full disk without a file name is reported against it."""
    _output_dir[:] = [os.fspath(output_dir)] if output_dir else []


class RunInterrupted(Exception):
    """Ctrl-C during a run; the message says what was kept and how to resume (printed as one line, exit 130)."""


def _named_error_types() -> tuple[type, ...]:
    found = []
    for module, name in _NAMED_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def is_user_error(err: BaseException) -> bool:
    """Whether `err` is bad input (reported on one line) rather than a bug (reported with its traceback)."""
    return isinstance(err, (ValueError, OSError, *_named_error_types()))


def _is_no_space(err: BaseException) -> bool:
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        text = str(err)
        if "No space left on device" in text or "StorageFull" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _no_space_file(err: BaseException) -> str | None:
    while err is not None:
        if isinstance(err, OSError) and err.filename:
            return os.fspath(err.filename)
        err = err.__cause__ or err.__context__
    return None


def no_space_message(err: BaseException) -> str | None:
    """'no space left in <dir>: could not write <file>; ...' when `err` is a full disk, else None."""
    if not _is_no_space(err):
        return None
    if isinstance(err, OSError) and not err.filename and str(err.strerror or "").startswith("no space left in"):
        return err.strerror  # the pre-flight's own estimate (cdtm_hf.training.output_dir.check_disk_space)
    name = _no_space_file(err)
    where = os.path.dirname(name) if name else (_output_dir[0] if _output_dir else "the output folder")
    what = os.path.basename(name) if name else "a checkpoint or result file"
    kept = " (checkpoints completed before it are kept)" if _output_dir else ""
    return (f"no space left in {where}: could not write {what}{kept}; free some space there or pass another "
            "--output_dir, then run the command again")


def _pickle_message(err: BaseException) -> str | None:
    """A weights-only `torch.load` refusal, without torch's advice to retry with `weights_only=False`."""
    import pickle

    if not isinstance(err, pickle.UnpicklingError):
        return None
    return ("a weights file is not a plain tensor file (it holds pickled objects that would run code) and will not be "
            "loaded; use safetensors (model.safetensors, written by save_pretrained)")


def one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and text.startswith("'") and text.endswith("'"):
        text = text[1:-1]
    return " ".join(part.rstrip() for part in text.splitlines() if part.strip())


def _pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """`argv` without a bare `--debug`, and whether it was there (TrainingArguments' `--debug VALUE` is kept)."""
    kept, debug = [], False
    for i, item in enumerate(argv):
        bare = item == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("-"))
        debug |= bare
        if not bare:
            kept.append(item)
    return kept, debug


def command_line(func: Callable[[list[str]], Any]) -> Callable[[Sequence[str] | None], Any]:
    """Wrap a console entry point `func(argv) -> exit status` in the boundary described in this module."""

    @functools.wraps(func)
    def wrapper(argv: Sequence[str] | None = None):
        argv, debug = _pop_debug(list(sys.argv[1:] if argv is None else argv))
        debug |= os.environ.get(DEBUG_ENV, "") not in ("", "0")
        try:
            return func(argv)
        except RunInterrupted as err:
            print(f"interrupted: {one_line(err)}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("interrupted: stopped by Ctrl-C", file=sys.stderr)
            return 130
        except Exception as err:
            if debug:
                raise
            message = no_space_message(err) or _pickle_message(err)
            if message is None and not is_user_error(err):
                raise
            print(f"error: {message or one_line(err)}", file=sys.stderr)
            return 2
        finally:
            writing_into(None)

    return wrapper


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` report a bad argument as one line, `error: <prog>: <message> (see <prog> --help)`, exit 2."""

    def error(message: str):
        parser.exit(2, f"error: {parser.prog}: {message} (see {parser.prog} --help)\n")

    parser.error = error  # type: ignore[method-assign]
    parser.epilog = " ".join(filter(None, [parser.epilog, DEBUG_HELP]))
    return parser


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line (what `add_subparsers(parser_class=...)` needs)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def refuse_unknown_flags(parser: argparse.ArgumentParser, argv: Sequence[str],
                         actions: Iterable[argparse.Action]) -> None:
    """`parser.error` on the first argument `parser` does not know, with the closest of the flags of `actions` (the
    parser's, as `add_argument` returned them), before any value check."""
    import difflib

    _, unknown = parser.parse_known_args(list(argv))
    if not unknown:
        return
    flags = [s for action in actions for s in action.option_strings]
    first = unknown[0].split("=", 1)[0]
    close = difflib.get_close_matches(first, flags, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
