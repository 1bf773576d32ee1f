"""The cluster plan check (`azr config show --plan`): the paper configs fit ray_cluster.yaml at
its min_workers, and a config/cluster pair that cannot run fails naming the shortfall."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from support import REPO_ROOT

from azr.config import load_config
from driver.plan import load_cluster, plan_run

CLUSTER = REPO_ROOT / "ray_cluster.yaml"
CONFIG_7B = REPO_ROOT / "configs" / "qwen2.5-7b-coder.yaml"
CONFIG_14B = REPO_ROOT / "configs" / "qwen2.5-14b-coder.yaml"


@pytest.mark.parametrize("config", [CONFIG_7B, CONFIG_14B], ids=["7b", "14b"])
def test_the_shipped_configs_fit_the_shipped_cluster(config):
    plan = plan_run(load_config(config), load_cluster(CLUSTER))
    assert plan.shortfalls == [] and plan.fits
    text = "\n".join(plan.lines)
    assert "rollout-3 (TP 2)" in text and "executors x 4 CPU, 6.0 GiB" in text


def test_14b_on_two_gpu_nodes_fails_naming_the_gpu_shortfall():
    cluster = copy.deepcopy(load_cluster(CLUSTER))
    cluster["available_node_types"]["gpu"]["min_workers"] = 2
    plan = plan_run(load_config(CONFIG_14B), cluster)
    assert not plan.fits
    assert plan.shortfalls[0].startswith(
        "the config needs 24 GPUs but min_workers of gpu give 16: raise min_workers to at least 3"
    )
    assert any(s.startswith("learner worker 8 needs 1 GPU") for s in plan.shortfalls)


def test_executor_containers_whose_limits_exceed_the_node_memory_fail():
    # The 0.1 default container limit: 2 x slots x memory_mb + 256 MiB per container.
    config = load_config(CONFIG_14B, ["executor.docker.memory_mb=null", "executor.memory_mb=4096"])
    plan = plan_run(config, load_cluster(CLUSTER))
    assert not plan.fits
    (first, second) = plan.shortfalls
    assert first.startswith("executor-0: 8 executor containers x 32.2 GiB = 258.0 GiB")
    assert "the node has 64 GiB" in first and second.startswith("executor-1:")


def test_executor_cpus_beyond_the_node_fail_and_shared_slots_are_noted():
    config = load_config(CONFIG_7B, ["executor.per_node=16"])
    plan = plan_run(config, load_cluster(CLUSTER))
    assert any("= 64 CPUs, the node has 32" in s for s in plan.shortfalls)
    few = plan_run(load_config(CONFIG_7B, ["executor.docker.cpus=1"]), load_cluster(CLUSTER))
    assert few.fits and any("4 slots share 1 CPU(s)" in line for line in few.lines)


def test_an_unknown_instance_type_needs_its_resources(tmp_path):
    cluster = copy.deepcopy(load_cluster(CLUSTER))
    cluster["available_node_types"]["executor"]["node_config"]["InstanceType"] = "x9.huge"
    with pytest.raises(ValueError, match="'x9.huge' is not in azr's table"):
        plan_run(load_config(CONFIG_7B), cluster)
    cluster["available_node_types"]["executor"]["resources"].update(CPU=64, memory=128 << 30)
    assert plan_run(load_config(CONFIG_7B), cluster).fits


def test_the_cli_exits_1_with_the_shortfall_and_0_when_it_fits(tmp_path):
    broken = yaml.safe_load(CLUSTER.read_text())
    broken["available_node_types"]["gpu"]["min_workers"] = 2
    broken_file = tmp_path / "cluster.yaml"
    broken_file.write_text(yaml.safe_dump(broken))

    def show(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "driver.cli", "config", "show", "--plan", *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO_ROOT)

    fits = show("--config", str(CONFIG_14B))
    assert fits.returncode == 0 and "fits: yes" in fits.stdout, fits.stderr
    short = show("--config", str(CONFIG_14B), "--cluster", str(broken_file))
    assert short.returncode == 1 and "fits: NO" in short.stdout
    assert "needs 24 GPUs but min_workers of gpu give 16" in short.stdout
    missing = show("--config", str(CONFIG_14B), "--cluster", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr


def test_the_plan_carries_the_memory_estimate_and_the_bytes_of_a_sync():
    plan = plan_run(load_config(CONFIG_14B), load_cluster(CLUSTER))
    text = "\n".join(plan.lines)
    assert "memory per GPU (79.6 GiB, Qwen2.5-14B): learner 49.3 GiB (62%)" in text
    assert "weight sync: 29.5 GB per sync in bfloat16 from learner rank 0 to 4 engines" in text
    fp32 = plan_run(load_config(CONFIG_14B, ["rollout.dtype=float32"]), load_cluster(CLUSTER))
    assert any("59.1 GB per sync in float32" in line for line in fp32.lines)


def test_a_learner_step_that_cannot_fit_the_gpu_is_a_shortfall():
    config = load_config(CONFIG_7B, ["learner.micro_batch_tokens=200000"])
    plan = plan_run(config, load_cluster(CLUSTER))
    (shortfall,) = plan.shortfalls
    assert shortfall.startswith("a learner rank needs ~") and "the GPU has 79.6 GiB" in shortfall
