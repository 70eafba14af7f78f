"""cdtm_hf's logger and progress bars follow transformers', as the HF libraries' own do.

* The ``cdtm_hf`` logger's level is transformers' verbosity (or the root logger's, if lower) unless set here, so in
  a notebook ``transformers.logging.set_verbosity_info()`` surfaces the stage, BatchNorm and feature-cache
  messages. Where no handler would print them (no handler on the root logger, as in a notebook), the package prints
  them itself, to stderr; a command line's or pytest's root handler prints them otherwise, never both.
* [`progress_bar`] is tqdm (``tqdm.auto``), hidden when transformers' bars are disabled
  (``transformers.logging.disable_progress_bar()``) or inside [`progress_bars(False)`] (a run with
  ``--disable_tqdm``), which hides ``datasets``' bars too.

    import transformers, cdtm_hf
    transformers.logging.set_verbosity_info()       # cdtm_hf's INFO messages now show
    cdtm_hf.logging.set_verbosity(logging.WARNING)  # or set cdtm_hf's own level, apart from transformers'
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["command_line_logging", "get_verbosity", "install", "progress_bar", "progress_bars", "progress_bars_enabled",
           "set_verbosity"]

PACKAGE = "cdtm_hf"
_bars_enabled = True


def _transformers_verbosity() -> int:
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return logging.WARNING
    return hf_logging.get_verbosity()


class _PackageLogger(logging.Logger):
    """The ``cdtm_hf`` logger: `level` is its own when set (`setLevel`), else the more verbose of transformers'
    verbosity and the root logger's level (so ``logging.basicConfig(level=logging.INFO)`` shows them as before).

    transformers' `set_verbosity` and `basicConfig` call `Logger.setLevel`, which clears every logger's cached level,
    so the package's loggers see the change at once."""

    _own_level: int | None = None

    @property
    def level(self) -> int:  # type: ignore[override]
        if self._own_level:
            return self._own_level
        return min(_transformers_verbosity(), logging.getLogger().getEffectiveLevel())

    @level.setter
    def level(self, value: int) -> None:
        self._own_level = int(value) or None  # NOTSET (0): follow transformers again


class _FallbackHandler(logging.StreamHandler):
    """Prints the package's records only where nothing else would: when the root logger has no handler."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def install() -> logging.Logger:
    """Make the ``cdtm_hf`` logger follow transformers' verbosity (done on `import cdtm_hf`; idempotent)."""
    logger = logging.getLogger(PACKAGE)
    if not isinstance(logger, _PackageLogger):
        own = logger.__dict__.pop("level", logging.NOTSET)
        logger.__class__ = _PackageLogger
        logger.setLevel(own)  # also clears the loggers' cached levels, for the new level rule
    if not any(isinstance(h, _FallbackHandler) for h in logger.handlers):
        handler = _FallbackHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(levelname)s|%(name)s] %(message)s"))
        logger.addHandler(handler)
    return logger


def command_line_logging(**basic_config: Any) -> None:
    """A command line's logging: `logging.basicConfig(**basic_config)`, and the HF libraries' records printed once,
    by their own handlers. transformers propagates to the root logger when the environment says ``CI=true``, which
    printed each of its lines twice (once in each format) on CI machines; datasets always does, and is set the same
    way where the command has imported it (a command that never reads data does not import it for this)."""
    import transformers

    logging.basicConfig(**basic_config)
    transformers.utils.logging.disable_propagation()
    datasets = sys.modules.get("datasets")
    if datasets is not None:
        datasets.utils.logging.disable_propagation()


def set_verbosity(level: int | None) -> None:
    """Set the ``cdtm_hf`` logger's own level; ``None`` (or ``NOTSET``) follows transformers' verbosity again."""
    install().setLevel(level or logging.NOTSET)


def get_verbosity() -> int:
    """The ``cdtm_hf`` logger's effective level."""
    return install().getEffectiveLevel()


def progress_bars_enabled() -> bool:
    """Whether cdtm_hf shows progress bars now (see the module docstring)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_enabled = hf_logging.is_progress_bar_enabled()
    except ImportError:  # pragma: no cover
        hf_enabled = True
    return _bars_enabled and hf_enabled


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Within the block, cdtm_hf's and ``datasets``' progress bars are shown only if `enabled` (and were before)."""
    global _bars_enabled
    datasets = sys.modules.get("datasets")  # toggled only where it is in use (a command line may never import it)
    before, datasets_before = _bars_enabled, datasets is not None and datasets.is_progress_bar_enabled()
    _bars_enabled = before and enabled
    if not enabled and datasets is not None:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        _bars_enabled = before
        if datasets_before:
            datasets.enable_progress_bars()


def progress_bar(iterable: Iterable | None = None, **kwargs: Any):
    """`tqdm.auto.tqdm(iterable, **kwargs)`, disabled where cdtm_hf's bars are off (`progress_bars_enabled`)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_bars_enabled())
    return tqdm(iterable, **kwargs)
