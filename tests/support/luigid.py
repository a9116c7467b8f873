"""A real luigid on a free loopback port, with the shipped configs/luigid.cfg, and workers
that run the shipped configs/worker.cfg; every process is stopped whatever happens."""
from __future__ import annotations

import configparser
import datetime
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support import REPO

LUIGID = Path(sys.executable).with_name("luigid")
START_TIMEOUT = 30


def read_config(*layers: dict | Path) -> configparser.ConfigParser:
    """Config files and {section: {key: value}} dicts merged, later wins."""
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str
    for layer in layers:
        if isinstance(layer, Path):
            config.read(layer)
        else:
            config.read_dict(layer)
    return config


def write_config(path: Path, *layers: dict | Path) -> Path:
    """One Luigi config file from layers (see read_config)."""
    config = read_config(*layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        config.write(f)
    return path


@dataclass
class Event:
    task_id: str
    family: str
    params: dict
    event: str
    ts: datetime.datetime


@dataclass
class Server:
    port: int
    folder: Path

    def history(self) -> list[Event]:
        """Every event luigid recorded, oldest first, from its SQLite task history."""
        with sqlite3.connect(self.folder / "history.db") as db:
            rows = db.execute("SELECT t.id, t.task_id, t.name, e.event_name, e.ts FROM tasks t "
                              "JOIN task_events e ON e.task_id = t.id ORDER BY e.ts, e.id").fetchall()
            params = {}
            for record, name, value in db.execute("SELECT task_id, name, value FROM task_parameters"):
                params.setdefault(record, {})[name] = value
        return [Event(task_id, family, params.get(record, {}), event, datetime.datetime.fromisoformat(ts))
                for record, task_id, family, event, ts in rows]

    def page(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
            return reply.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def processes():
    """Start processes in their own process groups; on leaving, stop every one still running."""
    started: list[subprocess.Popen] = []

    def start(args: list, folder: Path, log: str, **env: str) -> subprocess.Popen:
        with open(folder / log, "w") as out:
            proc = subprocess.Popen([str(a) for a in args], cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                    env={**_environ(), **env}, start_new_session=True)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            _stop(proc)


def _environ() -> dict:
    """This process's environment without a Luigi config of its own."""
    return {k: v for k, v in os.environ.items() if k != "LUIGI_CONFIG_PATH"}


def _stop(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def luigid(folder: Path, settings: dict):
    """luigid on 127.0.0.1 with configs/luigid.cfg plus `settings`, its state, history and
    log in `folder`, started as the config's header says; yields a Server."""
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder / "luigid.cfg", REPO / "configs" / "luigid.cfg", settings)
    port = free_port()
    with processes() as start:
        proc = start([LUIGID, "--address", "127.0.0.1", "--port", port, "--state-path", "state.pickle",
                      "--logdir", "."], folder, "luigid.out", LUIGI_CONFIG_PATH=str(config))
        _wait_for_port(port, proc, folder / "luigid.out")
        yield Server(port, folder)


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"luigid exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"luigid did not listen on port {port} within {START_TIMEOUT} s:\n{log.read_text()}")


TASKS = ["-m", "tasks"]  # the command a node runs (docs/operations.md, "Many machines")


def worker_command(task: list[str], port: int, program: list[str] = TASKS) -> list:
    return [sys.executable, *program, *task, "--scheduler-host", "127.0.0.1", "--scheduler-port", port]


def run(commands: list[list], folder: Path, label: str, timeout: float = 240, **env: str) -> list[tuple[int, str]]:
    """Run commands at once in `folder` (its luigi.cfg is the experiment), the project and
    tests/support/holders.py importable; (exit code, log) of each."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    with processes() as start:
        procs = [start(command, folder, f"{label}{i}.log", PYTHONPATH=path, **env)
                 for i, command in enumerate(commands)]
        deadline = time.monotonic() + timeout
        codes = [proc.wait(max(1.0, deadline - time.monotonic())) for proc in procs]
    return [(code, (folder / f"{label}{i}.log").read_text()) for i, code in enumerate(codes)]


def run_workers(folder: Path, port: int, task: list[str], label: str, n: int = 2,
                program: list[str] = TASKS) -> list[tuple[int, str]]:
    """n workers of luigid at once, with configs/worker.cfg."""
    return run([worker_command(task, port, program)] * n, folder, label,
               LUIGI_CONFIG_PATH=str(REPO / "configs" / "worker.cfg"))
