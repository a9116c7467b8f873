"""Data-parallel training: one student trained by N processes (ranks), started by PyTorch's
own launcher, torchrun, on one node or, through srun, on several.

Every rank walks the same epoch permutation and takes its share of each global batch
(rows rank, rank + N, ...), so the batch is `[train] batch_size` whatever N, and the view
each image replays in an epoch never depends on N. DistributedDataParallel averages the
ranks' gradients; each rank's loss is weighted by its share of the batch, so that the
average is the whole batch's mean loss even when the last batch does not split evenly.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job; the default is no such job. A job
    torchrun started is `launched`, even with one rank (a check of the path on one GPU)."""
    rank: int = 0
    world: int = 1
    local: int = 0
    launched: bool = False

    @property
    def main(self) -> bool:
        """Rank 0 validates, checkpoints and writes the results."""
        return self.rank == 0

    def share(self, pos: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's rows of a global batch, and the weight of its mean loss (its share of
        the batch times the world size) that makes the ranks' average the batch's mean."""
        mine = pos[self.rank::self.world]
        return mine, self.world * len(mine) / len(pos)


def from_env() -> Ranks:
    """The ranks torchrun describes in the environment; no job without torchrun."""
    env = os.environ
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                 "WORLD_SIZE" in env)


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """The ranks' process group for the block: NCCL between GPUs, gloo between CPUs."""
    if not ranks.launched:
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def launch_command(entry: Sequence[str], processes: int, nodes: int = 1, endpoint: str = "") -> list[str]:
    """The command that runs `python -m <entry>` as `processes` ranks per node: torchrun on
    this node, or, for several nodes (inside a SLURM allocation), srun starting one torchrun
    per node that meet at `endpoint` (host:port of the first node)."""
    if nodes == 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                "--tee=3", "-m", *entry]
    if not endpoint:
        raise ValueError("[train] nodes > 1 needs [train] rdzv_endpoint (host:port of the first node)")
    return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={nodes}", f"--nproc-per-node={processes}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", "--tee=3", "-m", *entry]


class RankFailed(RuntimeError):
    """A rank of a data-parallel job failed; the message names it and ends with its log."""


PROGRESS = "progress of the job:"  # opens rank 0's progress lines, which launch() passes on


def report(done: int, total: int, note: str = "") -> None:
    """Rank 0's progress (fit's callback) as a line of its output, for launch() to read back: on
    stderr, which torchrun passes on line by line (its stdout, a pipe, in blocks)."""
    print(PROGRESS, json.dumps([done, total, note]), file=sys.stderr, flush=True)


def launch(command: list[str], log: Path, env: dict[str, str] | None = None,
           progress: Callable[[int, int, str], object] | None = None,
           watch: Callable[[int], AbstractContextManager[object]] = nullcontext) -> None:
    """Run the job, appending its output (every rank's lines, prefixed `[defaultK]:`) to `log`
    under a line naming the launch, and passing rank 0's progress reports on to `progress`; raise
    RankFailed naming the rank that failed first, with the tail of its lines, if any fails. The
    job runs within `watch(pid of the launcher)`: the task's, which stops the job on SIGTERM."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(command)}\n")
        start = out.tell()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                              errors="replace") as job, watch(job.pid):
            try:
                _follow(job.stdout, out, progress)
            except BaseException:  # a failed progress report, say: the job must not go on unwatched
                job.terminate()  # torchrun stops its ranks
                job.wait()
                raise
    if job.returncode:
        with open(log, "rb") as f:
            f.seek(start)  # this launch's lines only
            raise RankFailed(_failure(f.read().decode(errors="replace"), job.returncode, log))


def _follow(lines: Iterable[str], out: TextIO, progress: Callable[[int, int, str], object] | None) -> None:
    """Copy the job's output to `out` as it comes, its progress reports to `progress`."""
    for line in lines:
        out.write(line)
        out.flush()
        if progress and PROGRESS in line:
            progress(*json.loads(line.split(PROGRESS, 1)[1]))


def _failure(text: str, code: int, log: Path, lines: int = 15) -> str:
    """torchrun's "Root Cause" names the first rank to fail; its own lines say why."""
    cause = re.search(r"Root Cause.*?rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\).*?exitcode\s*:\s*(-?\d+)",
                      text, re.S)
    if cause is None:
        return f"the data-parallel job failed (exit code {code}); its output: {log}"
    rank, local, exit_code = cause.groups()
    own = [line.split(":", 1)[1] for line in text.splitlines() if line.startswith(f"[default{local}]:")]
    tail = "\n  ".join(own[-lines:]) or "(no output)"
    return f"rank {rank} of the data-parallel job failed (exit code {exit_code}); its last lines ({log}):\n  {tail}"
