"""What happens to a bad file: skipped and counted, or (``data.strict``) the run stops naming it.

A bad file is one that cannot become a training sample: undecodable (corrupt, truncated, not an
image at all, missing) or with a label out of range. Odd but decodable formats (grayscale, CMYK,
palette, RGBA, 16-bit) are not bad: every backend converts them to RGB.

Every backend reports bad files here from the main process (loader workers hand back the path
and the reason instead of raising), so the count is one number per data source, each file is
logged once with its reason, and ``strict`` stops the run with an error that names the file.
"""

from __future__ import annotations

import logging
from typing import List, Tuple

log = logging.getLogger("classy_fast")

MAX_LOGGED = 20  # individual warnings; later files are counted and summarised


class BadImageError(ValueError):
    """A file that cannot be used as a sample; ``path`` names it, the message says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class SkippedFiles:
    """Counter of skipped files for one data source (``count``; the first ones in ``examples``)."""

    def __init__(self, strict: bool, split: str = ""):
        self.strict = strict
        self.split = split
        self.count = 0
        self.examples: List[Tuple[str, str]] = []
        self._seen: set = set()

    def report(self, path: str, reason: str) -> None:
        """Record one bad file; raises BadImageError when strict. A file is counted once."""
        if self.strict:
            raise BadImageError(path, f"{reason} (data.strict is true; set it false to skip and count such files)")
        if path in self._seen:
            return
        self._seen.add(path)
        self.count += 1
        if len(self.examples) < MAX_LOGGED:
            self.examples.append((path, reason))
            log.warning("data%s: skipping %s: %s", f" ({self.split})" if self.split else "", path, reason)
        elif self.count == MAX_LOGGED + 1:
            log.warning("data%s: more bad files; only the count is reported from here on",
                        f" ({self.split})" if self.split else "")

    def __int__(self) -> int:
        return self.count

    @property
    def paths(self) -> frozenset:
        """The distinct bad files counted: ranks that met the same file (a list entry every rank reads,
        a file in several ranks' shares over the epochs) count it once in the job's total."""
        return frozenset(self._seen)
