"""SLURM: `[compute] scheduler = slurm` runs the image store and the teacher pass on a
dask-jobqueue SLURMCluster built from [slurm], and configs/runall.sbatch runs Luigi
workers as an array against luigid. No SLURM runs here, so, as dask-jobqueue tests itself,
the job script is checked line by line; then a stand-in `sbatch` that runs the script in
the background proves that the script's workers do the work."""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask_jobqueue
import pytest
from distributed import Client, LocalCluster
from support.build import build
from support.slow_runs import assert_same_files, save_teacher, teacher_job, write_cache, write_store

import tasks.check
from pipeline.runtime import cluster
from pipeline.runtime.cluster import SlurmSettings, dask_scheduler, slurm_cluster
from pipeline.training.distributed import launch_command
from tasks import PrepareDataset
from tasks.check import config_problems
from tasks.config import slurm

SECTION = {"queue": "gpu-short", "account": "kd-lab", "cores": "4", "processes": "2", "memory": "16GiB",
           "walltime": "00:20:00", "jobs": "3", "extra_directives": "\n--qos=normal\n--constraint=skylake",
           "prologue": "\nmodule load cuda\nsource venv/bin/activate", "interface": "lo"}
SETTINGS = SlurmSettings(queue="gpu-short", account="kd-lab", cores=4, processes=2, memory="16GiB",
                         walltime="00:20:00", jobs=3, extra_directives=("--qos=normal", "--constraint=skylake"),
                         prologue=("module load cuda", "source venv/bin/activate"), interface="lo")


@pytest.fixture(autouse=True)
def loopback():
    """Every scheduler these tests start listens on 127.0.0.1 alone, with no dashboard.
    (dask_jobqueue is imported above: its defaults must be loaded before this is set.)"""
    with dask.config.set({"jobqueue.slurm.scheduler-options": {"host": "127.0.0.1", "dashboard_address": None}}):
        yield


def set_section(luigi_config, values: dict) -> None:
    for key, value in values.items():
        luigi_config("slurm", key, value)


def test_slurm_section_becomes_the_job_script(luigi_config):
    set_section(luigi_config, SECTION)
    assert slurm().settings() == SETTINGS
    with slurm_cluster(slurm().settings()) as jobs:
        assert isinstance(jobs, dask_jobqueue.SLURMCluster)
        script = jobs.job_script()
        address = jobs.scheduler_address
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in ("-p gpu-short", "-A kd-lab", "-n 1", "--cpus-per-task=4", "--mem=16G", "-t 00:20:00",
                      "--qos=normal", "--constraint=skylake"):
        assert f"#SBATCH {directive}" in lines, directive
    assert lines.index("module load cuda") < lines.index("source venv/bin/activate") < len(lines) - 1
    worker = lines[-1].split()
    assert worker[:4] == [sys.executable, "-m", "distributed.cli.dask_worker", address]
    for flag, value in (("--nworkers", "2"), ("--nthreads", "2"), ("--memory-limit", "8.00GiB"),
                        ("--interface", "lo")):
        assert worker[worker.index(flag) + 1] == value, flag


def test_empty_slurm_section_leaves_out_partition_and_account(luigi_config):
    with slurm_cluster(slurm().settings()) as jobs:
        script = jobs.job_script()
    assert "#SBATCH -p" not in script and "#SBATCH -A" not in script
    assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH -t 01:00:00" in script


@pytest.mark.parametrize("key,value,fix", [("jobs", "0", ">= 1"), ("processes", "8", "<= cores (4)"),
                                           ("memory", "lots", "Could not interpret 'lots'")])
def test_bad_slurm_values_stop_the_run_before_any_task(luigi_config, key, value, fix):
    luigi_config("slurm", key, value)  # refused whatever the scheduler: a value written there is meant for a run
    [problem] = config_problems()
    assert (problem.section, problem.key, str(problem.value)) == ("slurm", key, value) and fix in problem.fix


def test_scheduler_slurm_without_dask_jobqueue_names_the_install(luigi_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # as if not installed
    monkeypatch.setattr(tasks.check, "_checked", {})  # its verdict must not outlive the test
    luigi_config("compute", "scheduler", "slurm")
    [problem] = config_problems()
    assert (problem.section, problem.key) == ("compute", "scheduler") and "[cluster]" in problem.fix


@pytest.mark.slow
def test_compute_scheduler_slurm_starts_the_cluster_the_section_describes(luigi_config, monkeypatch):
    """PrepareDataset with scheduler = slurm asks for a SLURMCluster of the [slurm] values and
    scales it to `jobs`; an in-process cluster stands in for it."""
    asked = []

    class StandIn(LocalCluster):
        def scale(self, n: int = 0, jobs: int = 0) -> None:  # SLURMCluster's signature
            if jobs:
                asked.append(jobs)
            super().scale(min(n + jobs, 1))

    def fake_slurm_cluster(settings):
        asked.append(settings)
        return StandIn(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None)

    monkeypatch.setattr(cluster, "slurm_cluster", fake_slurm_cluster)
    set_section(luigi_config, SECTION)
    luigi_config("compute", "scheduler", "slurm")
    ok, ran = build(PrepareDataset("demo"))
    assert ok and [type(t).__name__ for t in ran] == ["PrepareDataset"]
    assert asked == [SETTINGS, SETTINGS.jobs]


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """`sbatch` and `scancel` on PATH that run a job script on this machine, in a process
    group of its own named by the job id, and kill that group; returns the jobs' folder."""
    jobs, bin_ = tmp_path / "jobs", tmp_path / "bin"
    jobs.mkdir(), bin_.mkdir()
    (bin_ / "sbatch").write_text(f"""#!/usr/bin/env bash
set -e
script={jobs}/job-$$.sh
cp "$1" "$script"  # dask-jobqueue deletes its copy when sbatch returns
setsid bash "$script" > "$script.log" 2>&1 < /dev/null &
echo "$!" >> {jobs}/ids
echo "Submitted batch job $!"
""")
    (bin_ / "scancel").write_text('#!/usr/bin/env bash\nkill -TERM -- "-$1" 2>/dev/null || true\n')
    for command in ("sbatch", "scancel"):
        (bin_ / command).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    return jobs


@pytest.mark.slow
def test_submitted_job_scripts_build_the_store_and_cache(fake_sbatch, tmp_path):
    """scheduler = slurm end to end: two jobs, one worker process each, on loopback build
    the same store and cache as the threads scheduler, and every job is gone afterwards."""
    store, weights = tmp_path / "store.zarr", tmp_path / "teacher.safetensors"
    save_teacher(weights)
    settings = SlurmSettings(cores=1, memory="2GiB", walltime="00:05:00", jobs=2, interface="lo")
    with dask_scheduler("slurm", settings) as address, Client(address) as client:
        try:
            client.wait_for_workers(settings.jobs, timeout=90)
        except TimeoutError:
            logs = "\n".join(p.read_text() for p in fake_sbatch.glob("*.log"))
            pytest.fail(f"the jobs' workers did not connect within 90 s; their output:\n{logs}")
        write_store(store, scheduler=address)
        write_cache(teacher_job(store, weights, tmp_path / "cache.zarr"), scheduler=address)
    write_store(tmp_path / "threads-store.zarr", scheduler="threads")
    write_cache(teacher_job(store, weights, tmp_path / "threads-cache.zarr"), scheduler="threads")
    assert_same_files(store, tmp_path / "threads-store.zarr")
    assert_same_files(tmp_path / "cache.zarr", tmp_path / "threads-cache.zarr")

    ids = [int(i) for i in (fake_sbatch / "ids").read_text().split()]
    assert len(ids) == settings.jobs
    deadline = time.monotonic() + 30
    while any(group_alive(i) for i in ids):
        assert time.monotonic() < deadline, "a job's processes outlived the cluster"
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


SBATCH = Path(__file__).parents[1] / "configs" / "runall.sbatch"
# What the Luigi command line of an array job resolves to, in the job's folder and environment.
RESOLVE = """
import json, sys
from luigi.cmdline_parser import CmdlineParser
from luigi.interface import core
from luigi.worker import worker
import tasks
with CmdlineParser.global_instance(sys.argv[1:]) as parser:
    print(json.dumps({"task": parser.get_task_obj().get_task_family(), "local_scheduler": core().local_scheduler,
                      "host": core().scheduler_host, "port": core().scheduler_port, "workers": core().workers,
                      "keep_alive": worker().keep_alive}))
"""


@pytest.mark.slow
def test_sbatch_array_job_is_a_worker_of_luigid(tmp_path):
    """configs/runall.sbatch, run as SLURM runs one array job (a stand-in `python` records
    the command): the luigid workers' command of tests/test_luigid.py, whose settings
    resolve to RunAll, one worker, luigid at LUIGID_HOST:LUIGID_PORT, keep_alive."""
    assert subprocess.run(["bash", "-n", SBATCH]).returncode == 0
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python").write_text(
        f"#!/usr/bin/env bash\nexec {sys.executable} -c 'import json, os, sys; json.dump("
        "{\"argv\": sys.argv[1:], \"cwd\": os.getcwd(), \"env\": dict(os.environ)}, "
        "open(os.environ[\"RECORD\"], \"w\"))' \"$@\"\n")
    (bin_ / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "RECORD": str(tmp_path / "job.json"),
           "SLURM_SUBMIT_DIR": str(SBATCH.parents[1]), "SLURM_ARRAY_TASK_ID": "1",
           "LUIGID_HOST": "127.0.0.1", "LUIGID_PORT": "8099"}
    subprocess.run(["bash", SBATCH], env=env, cwd=tmp_path, check=True)
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["argv"][:3] == ["-m", "tasks", "RunAll"]
    assert job["cwd"] == str(SBATCH.parents[1]) and job["env"]["LUIGI_CONFIG_PATH"] == "configs/worker.cfg"

    resolved = subprocess.run([sys.executable, "-c", RESOLVE, *job["argv"][2:]], env=job["env"], cwd=job["cwd"],
                              capture_output=True, text=True, check=True).stdout
    assert json.loads(resolved.splitlines()[-1]) == {
        "task": "RunAll", "local_scheduler": False, "host": "127.0.0.1", "port": 8099, "workers": 1,
        "keep_alive": True}

    del env["LUIGID_HOST"]
    missing = subprocess.run(["bash", SBATCH], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode != 0 and "set LUIGID_HOST" in missing.stderr


DDP_SBATCH = Path(__file__).parents[1] / "configs" / "student-ddp.sbatch"
# The ranks' command that TrainStudent runs for [train] processes = 4, nodes = 2.
DDP_COMMAND = ["srun", "--nodes=2", "--ntasks-per-node=1", sys.executable, "-m", "torch.distributed.run",
               "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=node1:29500", "--tee=3",
               "-m", "pipeline.training.job", "job.json"]


def script_lines(script: Path) -> list[str]:
    """The script's lines, a command continued with `\\` joined into one."""
    return script.read_text().replace("\\\n", " ").splitlines()


def test_ddp_sbatch_asks_for_the_nodes_and_gpus_its_command_trains_on():
    """configs/student-ddp.sbatch line by line: one task per node on 2 nodes of 4 GPUs, the
    rendezvous on the first node, and TrainStudent with 4 ranks per node (one per GPU) on
    the allocation's nodes, meeting there."""
    assert subprocess.run(["bash", "-n", DDP_SBATCH]).returncode == 0
    lines = script_lines(DDP_SBATCH)
    assert lines[0] == "#!/usr/bin/env bash"
    directives = dict(line.removeprefix("#SBATCH --").split("=", 1) for line in lines if line.startswith("#SBATCH"))
    assert {key: directives[key] for key in ("nodes", "ntasks-per-node", "gpus-per-node")} == {
        "nodes": "2", "ntasks-per-node": "1", "gpus-per-node": "4"}
    assert {"time", "output", "cpus-per-task", "mem"} <= directives.keys()
    assert "set -euo pipefail" in lines
    hosts = lines.index('hosts=$(scontrol show hostnames "$SLURM_JOB_NODELIST")')
    assert lines[hosts + 1] == "head=${hosts%%$'\\n'*}"  # the first name
    assert 'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"' in lines

    [command] = [shlex.split(line) for line in lines if line.startswith("exec ")]
    assert command[:4] == ["exec", "python", "-m", "tasks"] and command[4] == "TrainStudent"
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--mode"] == "${MODE:-kd}"
    assert flags["--train-processes"] == directives["gpus-per-node"]  # one rank per GPU
    assert flags["--train-nodes"] == "$SLURM_NNODES"  # = --nodes, or sbatch --nodes=K
    assert flags["--train-rdzv-endpoint"] == "$head:$port"


@pytest.fixture
def fake_slurm_job(tmp_path) -> tuple[dict, Path]:
    """The environment SLURM gives a batch script of `--nodes=2` (job 1234 on node1, node2),
    with a stand-in `scontrol` and a `python` that records its command; and the record."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "scontrol").write_text(
        '#!/usr/bin/env bash\n[[ "$*" == "show hostnames node[1-2]" ]] || exit 2\nprintf "node1\\nnode2\\n"\n')
    (bin_ / "python").write_text(
        f"#!/usr/bin/env bash\nexec {sys.executable} -c 'import json, os, sys; json.dump("
        "{\"argv\": sys.argv[1:], \"cwd\": os.getcwd(), \"env\": dict(os.environ)}, "
        "open(os.environ[\"RECORD\"], \"w\"))' \"$@\"\n")
    for command in ("scontrol", "python"):
        (bin_ / command).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "LUIGI_CONFIG_PATH"}
    env.update({"PATH": f"{bin_}:{os.environ['PATH']}", "RECORD": str(tmp_path / "job.json"),
                "SLURM_SUBMIT_DIR": str(DDP_SBATCH.parents[1]), "SLURM_JOB_ID": "1234",
                "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_NNODES": "2", "SLURM_CPUS_PER_TASK": "32",
                "DATASET": "demo", "STUDENT": "vit"})
    return env, tmp_path / "job.json"


# What the Luigi command line of the job resolves to: the task and the [train] settings it trains with.
RESOLVE_DDP = """
import json, sys
from luigi.cmdline_parser import CmdlineParser
from luigi.interface import core
import tasks
from tasks.config import train
with CmdlineParser.global_instance(sys.argv[1:]) as parser:
    task = parser.get_task_obj()
    print(json.dumps({"task": task.get_task_family(), "params": task.param_kwargs,
                      "local_scheduler": core().local_scheduler, "host": core().scheduler_host,
                      "port": core().scheduler_port, "processes": train().processes, "nodes": train().nodes,
                      "endpoint": train().rdzv_endpoint}))
"""


def resolve(job: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", RESOLVE_DDP, *job["argv"][2:]], env=job["env"], cwd=job["cwd"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow
def test_ddp_sbatch_runs_trainstudent_with_the_allocations_nodes_and_first_host(fake_slurm_job, tmp_path):
    """configs/student-ddp.sbatch run as SLURM runs it on the first node of node[1-2]: one
    `python -m tasks TrainStudent` whose settings resolve to 4 processes per node, 2 nodes
    and the rendezvous at node1, on luigi.cfg's local scheduler or, with LUIGID_HOST, luigid's."""
    env, record = fake_slurm_job
    subprocess.run(["bash", DDP_SBATCH], env=env, cwd=tmp_path, check=True)
    job = json.loads(record.read_text())
    port = 29500 + 1234 % 1000
    assert job["argv"] == ["-m", "tasks", "TrainStudent", "--dataset", "demo", "--student", "vit", "--mode", "kd",
                           "--train-processes", "4", "--train-nodes", "2", "--train-rdzv-endpoint", f"node1:{port}"]
    assert job["cwd"] == str(DDP_SBATCH.parents[1]) and "LUIGI_CONFIG_PATH" not in job["env"]
    assert job["env"]["SRUN_CPUS_PER_TASK"] == "32"  # srun gives each node's torchrun the job's CPUs
    assert resolve(job) == {
        "task": "TrainStudent", "params": {"dataset": "demo", "student": "vit", "mode": "kd", "variant": ""},
        "local_scheduler": True, "host": "localhost", "port": 8082, "processes": 4, "nodes": 2,
        "endpoint": f"node1:{port}"}

    env.update({"RDZV_PORT": "29611", "MODE": "baseline", "LUIGID_HOST": "127.0.0.1", "LUIGID_PORT": "8099"})
    subprocess.run(["bash", DDP_SBATCH], env=env, cwd=tmp_path, check=True)
    job = json.loads(record.read_text())
    assert job["env"]["LUIGI_CONFIG_PATH"] == "configs/worker.cfg"
    resolved = resolve(job)
    assert (resolved["params"]["mode"], resolved["endpoint"]) == ("baseline", "node1:29611")
    assert (resolved["local_scheduler"], resolved["host"], resolved["port"]) == (False, "127.0.0.1", 8099)

    env["SLURM_JOB_NODELIST"] = "node[3-4]"  # scontrol fails: no job without a rendezvous host
    assert subprocess.run(["bash", DDP_SBATCH], env=env, cwd=tmp_path, capture_output=True).returncode != 0
    del env["STUDENT"]
    missing = subprocess.run(["bash", DDP_SBATCH], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode != 0 and "set STUDENT" in missing.stderr


def test_ddp_launch_command_on_several_nodes_is_srun_starting_one_torchrun_per_node():
    entry = ["pipeline.training.job", "job.json"]
    assert launch_command(entry, 4, nodes=2, endpoint="node1:29500") == DDP_COMMAND
    assert launch_command(entry, 4) == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        "--nproc-per-node=4", "--tee=3", "-m", *entry]
    with pytest.raises(ValueError, match=r"\[train\] rdzv_endpoint"):
        launch_command(entry, 4, nodes=2)


# A rank of the stand-in job: joins the world torchrun describes and sums the ranks over it.
PROBE = """
import json, os, sys
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank())])
dist.all_reduce(total)
with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as out:
    json.dump({"world": dist.get_world_size(), "local": int(os.environ["LOCAL_RANK"]),
               "node": int(os.environ["SLURM_NODEID"]), "sum": total.item()}, out)
dist.destroy_process_group()
"""
# srun --nodes=K --ntasks-per-node=1 COMMAND inside an allocation: K copies of COMMAND, one per
# "node" (here all on this machine), each told its node; exits non-zero if any copy does.
FAKE_SRUN = """#!/usr/bin/env bash
nodes=1
while [[ "$1" == --* ]]; do
    case "$1" in --nodes=*) nodes=${1#--nodes=} ;; --ntasks-per-node=1) ;; *) echo "srun: $1?" >&2; exit 2 ;; esac
    shift
done
pids=()
for ((node = 0; node < nodes; node++)); do SLURM_NODEID=$node SLURM_PROCID=$node "$@" & pids+=($!); done
code=0
for pid in "${pids[@]}"; do wait "$pid" || code=$?; done
exit $code
"""


@pytest.mark.slow
def test_ddp_launch_command_through_srun_makes_one_world_of_nodes_times_processes(tmp_path):
    """launch_command's srun + torchrun command, run by a stand-in srun that starts one
    torchrun per "node" on this machine (gloo, 127.0.0.1): 2 nodes x 2 processes meet at the
    endpoint as one world of 4 ranks, each node's ranks local 0 and 1."""
    bin_, out = tmp_path / "bin", tmp_path / "ranks"
    bin_.mkdir(), out.mkdir()
    (bin_ / "srun").write_text(FAKE_SRUN)
    (bin_ / "srun").chmod(0o755)
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = launch_command(["ddp_probe", str(out)], 2, nodes=2, endpoint=f"127.0.0.1:{port}")
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "PYTHONPATH": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    log = tmp_path / "ddp.log"
    with open(log, "w") as sink:
        job = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = job.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
            code = "timed out"
    assert code == 0, f"the job: {code}; its output:\n{log.read_text()}"
    ranks = {int(p.stem.removeprefix("rank")): json.loads(p.read_text()) for p in out.glob("rank*.json")}
    assert sorted(ranks) == [0, 1, 2, 3]
    assert all(r["world"] == 4 and r["sum"] == 6 for r in ranks.values())
    assert sorted((r["node"], r["local"]) for r in ranks.values()) == [(0, 0), (0, 1), (1, 0), (1, 1)]
