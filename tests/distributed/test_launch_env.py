"""Launcher environments (torchrun, srun, none), SLURM host lists, backend choice, single-process helpers."""

import pytest
import torch

from classy_fast import distributed
from classy_fast.launch_env import SINGLE_PROCESS, detect_launch_env, expand_slurm_nodelist, first_slurm_host


def test_no_launcher_is_a_single_process():
    assert detect_launch_env({}) == SINGLE_PROCESS
    assert detect_launch_env({"RANK": "0", "WORLD_SIZE": "1"}) == SINGLE_PROCESS


def test_torchrun_variables():
    env = detect_launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
                             "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "x"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.launcher) == (
        3, 8, 1, "node7", 29400, "torchrun")
    manual = detect_launch_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h"})
    assert manual.launcher == "env" and manual.master_port == 29500


def test_torchrun_variables_are_checked():
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        detect_launch_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="inconsistent rank 2 / world size 2"):
        detect_launch_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        detect_launch_env({"RANK": "0", "WORLD_SIZE": "two"})


SRUN = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
        "SLURM_NODELIST": "gpu[07-08,11]", "SLURM_JOB_ID": "123456"}


def test_srun_step_variables(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: our own host-list parser
    env = detect_launch_env(SRUN)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher) == (5, 8, 1, "gpu07", "slurm")
    assert env.master_port == 20000 + 123456 % 20000  # per job, so two jobs on one node do not collide
    assert detect_launch_env({**SRUN, "MASTER_PORT": "29999", "MASTER_ADDR": "login1"}).master_addr == "login1"


def test_torchrun_inside_slurm_wins_and_bare_sbatch_is_single():
    torchrun = {**SRUN, "RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "MASTER_ADDR": "a"}
    assert detect_launch_env(torchrun).launcher == "env"
    batch_script = {k: v for k, v in SRUN.items() if k != "SLURM_STEP_ID"}  # python run directly in sbatch
    assert detect_launch_env(batch_script) == SINGLE_PROCESS


@pytest.mark.parametrize("nodelist, hosts", [
    ("node1", ["node1"]),
    ("node[1-3]", ["node1", "node2", "node3"]),
    ("gpu[007-009,012],cpu-a1", ["gpu007", "gpu008", "gpu009", "gpu012", "cpu-a1"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("a,b[3],c", ["a", "b3", "c"]),
])
def test_expand_slurm_nodelist(nodelist, hosts):
    assert expand_slurm_nodelist(nodelist) == hosts


def test_first_slurm_host_without_scontrol(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert first_slurm_host("dgx[10-12]") == "dgx10"


def test_backend_choice():
    assert distributed.resolve_backend("auto", "cpu") == "gloo"
    assert distributed.resolve_backend("gloo", "cuda") == "gloo"
    if not torch.cuda.is_available():
        assert distributed.resolve_backend("auto", "auto") == "gloo"
        with pytest.raises(ValueError, match="nccl"):
            distributed.resolve_backend("nccl", "cpu")


def test_helpers_are_no_ops_on_one_process():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank(), distributed.is_primary()) == (
        0, 1, 0, True)
    t = torch.tensor([1.0, 2.0])
    for reduce in (distributed.all_reduce_sum, distributed.all_reduce_mean, distributed.all_reduce_max,
                   distributed.all_reduce_min):
        assert reduce(t) is t and t.tolist() == [1.0, 2.0]
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.gather(t) == [t] and distributed.gather_objects(3) == [3] and distributed.gather_object(3) == [3]
    assert distributed.all_reduce_host_sum(2.5) == 2.5
    from classy_fast.config import DistributedConfig

    assert distributed.init_distributed(DistributedConfig(), "cpu").world_size == 1  # no launcher: no setup
    assert not distributed.is_distributed()


@pytest.mark.parametrize("port", [None, "29611"])
def test_hand_set_variables_without_master_port_get_the_default_exported(monkeypatch, port):
    """RANK/WORLD_SIZE/MASTER_ADDR set by hand: the default port must reach env:// init (it failed with
    'MASTER_PORT expected'); a port the user set is kept."""
    import os

    from classy_fast.config import DistributedConfig

    class Stop(Exception):
        pass

    seen = {}

    def fake_init(*args, **kwargs):
        seen["port"] = os.environ.get("MASTER_PORT")
        raise Stop

    for key in ("TORCHELASTIC_RUN_ID", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded, so that the port init_distributed exports is removed afterwards
        monkeypatch.delenv(key)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    if port is not None:
        monkeypatch.setenv("MASTER_PORT", port)
    monkeypatch.setattr(distributed.dist, "init_process_group", fake_init)
    with pytest.raises(Stop):
        distributed.init_distributed(DistributedConfig(watchdog=False), "cpu")
    assert seen["port"] == (port or "29500")
    assert not distributed.is_distributed()


@pytest.mark.parametrize("timeout", [0, -5])
def test_a_timeout_that_is_not_positive_is_refused_naming_the_key(monkeypatch, timeout):
    """0 does not mean 'no timeout': every collective (the rendezvous first) would give up at once."""
    from classy_fast.config import ConfigError, DistributedConfig

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        monkeypatch.setenv(key, "")  # recorded, so that anything exported is removed afterwards
        monkeypatch.delenv(key)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: pytest.fail("no group expected"))
    with pytest.raises(ConfigError, match=rf"distributed\.timeout_seconds must be > 0 \(seconds\), got {timeout}"):
        distributed.init_distributed(DistributedConfig(single_process_ddp=True, timeout_seconds=timeout), "cpu")
    assert not distributed.is_distributed()
