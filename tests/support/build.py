"""Build Luigi tasks in the test's process, and see which ran."""
from __future__ import annotations

import luigi
from luigi.task_register import Register

_RAN: list[luigi.Task] = []
luigi.Task.event_handler(luigi.Event.SUCCESS)(_RAN.append)


def build(*tasks: luigi.Task) -> tuple[bool, list[luigi.Task]]:
    """Build with the local scheduler and one worker; return (success, the tasks that ran)."""
    _RAN.clear()
    Register.clear_instance_cache()
    result = luigi.build(list(tasks), local_scheduler=True, workers=1, detailed_summary=True,
                         log_level="WARNING")
    return result.status.name.startswith("SUCCESS"), list(_RAN)
