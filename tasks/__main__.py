"""`python -m tasks TASK [options]`: `luigi --module tasks TASK [options]` with an exit code
that tells a batch system whether the task asked for is done, whoever did it.

Luigi judges a worker by what that worker saw. Under a central scheduler a worker whose
tasks were run by another worker counts them as `already_running` (it saw them running)
or `not_run` (it never got them), and exits non-zero although the experiment succeeded.
Here those two verdicts are overruled when the task asked for is complete when the worker
ends. Every other verdict (a failed task, missing input, a scheduling error) stands, and
a task left incomplete never exits 0, even where [retcode] leaves Luigi's codes at 0.
With `[worker] keep_alive` (configs/worker.cfg) a worker waits for the tasks it needs
until they are done or have failed, so "complete at the end" means the goal was met.
"""
from __future__ import annotations

import sys

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.retcodes import retcode, run_with_retcodes

import tasks  # noqa: F401 (registers the task classes)


def exit_code(argv: list[str]) -> int:
    with CmdlineParser.global_instance(argv) as parser:  # --help and bad arguments end here
        goal, codes = parser.get_task_obj(), retcode()
    try:
        run_with_retcodes(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    if code not in (0, codes.already_running, codes.not_run):
        return code
    done = complete(goal, argv)
    print(f"{goal} is {'' if done else 'not '}complete", file=sys.stderr)
    return 0 if done else code or 1


def complete(goal: luigi.Task, argv: list[str]) -> bool:
    """Whether the goal's outputs exist, with the command line's settings in force."""
    with CmdlineParser.global_instance(argv):
        try:
            return goal.complete()
        except Exception:  # noqa: BLE001 (the run's own log says what went wrong)
            return False


if __name__ == "__main__":
    sys.exit(exit_code(sys.argv[1:]))
