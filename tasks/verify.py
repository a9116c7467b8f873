"""VerifyData: read every chunk of a data set's image stores and teacher caches, and check
that each was written whole."""
from __future__ import annotations

from pathlib import Path

import luigi

from cache.storage.integrity import verify_outputs
from tasks.config import paths


class VerifyData(luigi.Task):
    """Check every chunk of every finished image store and teacher cache of the data set
    against its checksum, and that its manifest records every row as written. Damage fails
    the task (non-zero exit) with a list of every damaged shard, and marks each damaged
    output unfinished, so the next run rebuilds it."""

    dataset = luigi.Parameter(description="a name from luigi.cfg's [datasets] section")

    def complete(self) -> bool:
        return False  # a check, not an output: it runs whenever asked

    def run(self) -> None:
        for root in verify_outputs(Path(paths().work) / self.dataset):
            print(f"verified: {root}")
