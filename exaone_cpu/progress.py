"""Feedback during the long waits (quantizing, repacking, long prefills): a tqdm bar with an ETA on
stderr when it is a terminal (or when asked), nothing otherwise, so logs and pipes stay clean."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A progress bar over `total` units; update(n) after each piece of work, close() at the end
    (or use it as a context manager). Disabled: every call does nothing."""

    def __init__(self, total: int, desc: str, *, unit: str = "it", enabled: bool | None = None, **options: Any):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is a dependency; a broken install just shows nothing
                return
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, **options)

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1, note: str | None = None) -> None:
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PrefillProgress:
    """An on_prefill(done, total) callback that shows a bar for prompts of more than `threshold`
    tokens, gone once the prompt is in (a terminal only, unless enabled=True)."""

    def __init__(self, threshold: int = 256, enabled: bool | None = None):
        self.threshold = threshold
        self.enabled = enabled
        self._bar: Progress | None = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if total <= self.threshold:
            return
        if self._bar is None:
            self._bar = Progress(total, "prefill", unit="tok", enabled=self.enabled, leave=False)
            self._done = 0
        self._bar.update(done - self._done)
        self._done = done
        if done >= total:
            self._bar.close()
            self._bar = None
