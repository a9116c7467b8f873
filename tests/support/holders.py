"""Tasks that each hold one `train` resource and look for another holder while they run,
for workers of a real luigid (`luigi --module support.holders Holders`, tests/ on PYTHONPATH)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import luigi

PATIENCE = 3.0  # s a holder looks for another one: long enough for a second worker to start one


class Hold(luigi.Task):
    folder = luigi.Parameter()
    n = luigi.IntParameter()
    resources = {"train": 1}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(Path(self.folder) / f"hold-{self.n}.json")

    def run(self) -> None:
        me = Path(self.folder) / f"holding-{self.n}"
        me.touch()
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline and not self.others(me):
            time.sleep(0.05)
        others = self.others(me)
        me.unlink()
        with self.output().temporary_path() as tmp:
            Path(tmp).write_text(json.dumps({"others_holding": others}))

    def others(self, me: Path) -> list[str]:
        return [p.name for p in Path(self.folder).glob("holding-*") if p != me]


class Holders(luigi.WrapperTask):
    folder = luigi.Parameter()

    def requires(self):
        return [Hold(self.folder, n) for n in range(2)]
