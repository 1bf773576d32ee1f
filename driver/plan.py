"""Where a run's actors would go on a launcher cluster, checked before any node exists.

`plan_run(config, cluster)` places the rollout engines (tensor-parallel GPUs on one node), the
learner workers (one GPU each) and the executor containers on the ``min_workers`` nodes of a
`ray_cluster.yaml`, and lists every shortfall: GPUs, CPUs, memory, executor limits. Node
shapes come from the node type's ``resources`` when it sets them, else from a table of AWS
instance types (what Ray's AWS provider detects at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from azr.config import AZRConfig
from azr.memory import (
    GIB as BYTES_PER_GIB,
)
from azr.memory import (
    MemoryEstimateError,
    learner_estimate,
    model_shape,
    rollout_estimate,
)
from executor_pool.docker_sandbox import container_memory_mb

GIB = BYTES_PER_GIB
RAY_RESERVE_GIB = 4.0
"""Memory a node keeps for Ray itself (raylet, object store headroom, the OS)."""


@dataclass(frozen=True)
class NodeShape:
    cpus: int
    memory_gib: float
    gpus: int = 0
    gpu_memory_gib: float = 0.0


# What Ray's AWS provider reports for the instance types our cluster file and users pick.
INSTANCE_TYPES: dict[str, NodeShape] = {
    "p5.48xlarge": NodeShape(192, 2048, 8, 79.6),
    "p5e.48xlarge": NodeShape(192, 2048, 8, 141),
    "p5en.48xlarge": NodeShape(192, 2048, 8, 141),
    "p4d.24xlarge": NodeShape(96, 1152, 8, 40),
    "p4de.24xlarge": NodeShape(96, 1152, 8, 79.6),
    "g6e.48xlarge": NodeShape(192, 1536, 8, 48),
    "c7i.4xlarge": NodeShape(16, 32),
    "c7i.8xlarge": NodeShape(32, 64),
    "c7i.16xlarge": NodeShape(64, 128),
    "m6i.4xlarge": NodeShape(16, 64),
    "m6i.8xlarge": NodeShape(32, 128),
    "m7i.8xlarge": NodeShape(32, 128),
}


@dataclass
class NodePlan:
    """One node of the cluster at ``min_workers`` and what lands on it."""

    name: str
    node_type: str
    shape: NodeShape
    labels: dict[str, float]
    gpus_used: int = 0
    actors: list[str] = field(default_factory=list)


@dataclass
class RunPlan:
    nodes: list[NodePlan]
    lines: list[str]
    """Human-readable placement and sizing, in order."""
    shortfalls: list[str]
    """Why the config cannot run on this cluster as is (empty: it fits)."""

    @property
    def fits(self) -> bool:
        return not self.shortfalls


def node_shape(name: str, node_type: dict[str, Any]) -> NodeShape:
    """A node type's CPUs, memory and GPUs (its ``resources`` override the instance table)."""
    instance = str(node_type.get("node_config", {}).get("InstanceType", ""))
    base = INSTANCE_TYPES.get(instance)
    resources = node_type.get("resources", {}) or {}
    if base is None and "CPU" not in resources:
        raise ValueError(
            f"node type {name!r}: instance type {instance!r} is not in azr's table; give its "
            "resources (CPU, GPU, memory in bytes) in ray_cluster.yaml"
        )
    base = base or NodeShape(0, 0)
    return NodeShape(
        cpus=int(resources.get("CPU", base.cpus)),
        memory_gib=float(resources.get("memory", base.memory_gib * GIB)) / GIB,
        gpus=int(resources.get("GPU", base.gpus)),
        gpu_memory_gib=base.gpu_memory_gib,
    )


def cluster_nodes(cluster: dict[str, Any]) -> list[NodePlan]:
    """The head plus ``min_workers`` nodes of every worker type."""
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    nodes = []
    for name, spec in types.items():
        count = 1 if name == head else int(spec.get("min_workers", 0))
        shape = node_shape(name, spec)
        labels = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        for i in range(count):
            label = name if name == head else f"{name}-{i}"
            nodes.append(NodePlan(label, name, shape, labels))
    return nodes


def plan_run(config: AZRConfig, cluster: dict[str, Any]) -> RunPlan:
    """Place the run's actors on the cluster's minimum nodes; see the module docstring."""
    nodes = cluster_nodes(cluster)
    lines: list[str] = []
    shortfalls: list[str] = []
    gpu_nodes = [n for n in nodes if n.shape.gpus > 0]
    ro, le, ex = config.rollout, config.learner, config.executor

    # Rollout engines first: each needs its tensor-parallel GPUs on one node.
    tp = ro.tensor_parallel_size
    for i in range(ro.num_actors):
        node = next((n for n in gpu_nodes if n.shape.gpus - n.gpus_used >= tp), None)
        if node is None:
            shortfalls.append(
                f"rollout engine {i} needs {tp} GPUs on one node; none is left "
                f"({_gpu_summary(gpu_nodes)})"
            )
            continue
        node.gpus_used += tp
        node.actors.append(f"rollout-{i} (TP {tp})")
    # Learner workers: one GPU each (``gpus_per_worker``), packed onto the fewest nodes.
    per_worker = le.gpus_per_worker
    for rank in range(le.num_workers):
        node = next((n for n in gpu_nodes if n.shape.gpus - n.gpus_used >= per_worker), None)
        if node is None:
            shortfalls.append(
                f"learner worker {rank} needs {per_worker:g} GPU; none is left "
                f"({_gpu_summary(gpu_nodes)})"
            )
            continue
        node.gpus_used += int(per_worker)
        node.actors.append(f"learner-{rank}")
    need = ro.num_actors * tp + le.num_workers * per_worker
    have = sum(n.shape.gpus for n in gpu_nodes)
    lines.append(
        f"GPUs: {need:g} needed ({ro.num_actors} engines x TP {tp} + {le.num_workers} learner "
        f"workers), {have} on {len(gpu_nodes)} GPU node(s) at min_workers"
    )
    if need > have:
        short_types = sorted({n.node_type for n in gpu_nodes}) or ["<none>"]
        per_node = max((n.shape.gpus for n in gpu_nodes), default=8)
        shortfalls.insert(
            0,
            f"the config needs {need:g} GPUs but min_workers of {', '.join(short_types)} give "
            f"{have}: raise min_workers to at least {-(-int(need) // per_node)} nodes",
        )

    # Memory per GPU (azr.memory's upper-bound estimate) and what one weight sync moves.
    gpu_gib = min((n.shape.gpu_memory_gib for n in gpu_nodes), default=0.0)
    if gpu_nodes and gpu_gib:
        lines += _memory_and_sync(config, gpu_gib, shortfalls)

    # Executors: per_node containers on every node offering executor.resource.
    executor_nodes = [n for n in nodes if ex.resource is None or n.labels.get(ex.resource, 0) > 0]
    if ex.backend == "docker":
        memory_gib = container_memory_mb(ex) / 1024
        cpus = ex.docker.cpus
    else:
        memory_gib, cpus = ex.slots * ex.memory_mb / 1024, float(ex.slots)
    if not executor_nodes:
        shortfalls.append(f"no node offers the executor resource {ex.resource!r}")
    for node in executor_nodes:
        want_cpu, want_mem = ex.per_node * cpus, ex.per_node * memory_gib
        usable_mem = node.shape.memory_gib - RAY_RESERVE_GIB
        node.actors.append(f"{ex.per_node} executors x {cpus:g} CPU, {memory_gib:.1f} GiB")
        if want_cpu > node.shape.cpus:
            shortfalls.append(
                f"{node.name}: {ex.per_node} executor containers x {cpus:g} CPUs = {want_cpu:g} "
                f"CPUs, the node has {node.shape.cpus}"
            )
        if want_mem > usable_mem:
            shortfalls.append(
                f"{node.name}: {ex.per_node} executor containers x {memory_gib:.1f} GiB = "
                f"{want_mem:.1f} GiB of container memory limits, the node has "
                f"{node.shape.memory_gib:g} GiB ({usable_mem:g} after {RAY_RESERVE_GIB:g} "
                "GiB for Ray): lower executor.per_node or executor.docker.memory_mb"
            )
    if cpus < ex.slots:
        lines.append(
            f"note: each container's {ex.slots} slots share {cpus:g} CPU(s) "
            "(executor.docker.cpus): programs will time out more often"
        )
    slots = len(executor_nodes) * ex.per_node * ex.slots
    lines.append(
        f"executors: {len(executor_nodes)} node(s) x {ex.per_node} x {ex.slots} slots = "
        f"{slots} programs in parallel"
    )
    for node in nodes:
        if node.node_type == cluster["head_node_type"]:
            node.actors.insert(0, "driver, buffer actor")
        used = f", {node.gpus_used}/{node.shape.gpus} GPUs" if node.shape.gpus else ""
        placed = ", ".join(node.actors) or "(idle)"
        lines.append(
            f"  {node.name} [{node.shape.cpus} CPUs, {node.shape.memory_gib:g} GiB{used}]: {placed}"
        )
    return RunPlan(nodes, lines, shortfalls)


def _memory_and_sync(config: AZRConfig, gpu_gib: float, shortfalls: list[str]) -> list[str]:
    """The learner's and the rollout's per-GPU estimate on ``gpu_gib`` GPUs, and the bytes of
    one weight sync; a learner estimate above the GPU is a shortfall."""
    try:
        shape = model_shape(config)
    except MemoryEstimateError as exc:
        return [f"memory: no estimate ({exc})"]
    learner = learner_estimate(config, shape, gpu_gib)
    rollout = rollout_estimate(config, shape, gpu_gib)
    gpu = learner.gpu_bytes
    lines = [
        f"memory per GPU ({gpu_gib:g} GiB, {shape.name}): learner {learner.total / GIB:.1f} GiB "
        f"({100 * learner.total / gpu:.0f}%), rollout {rollout.total / GIB:.1f} GiB with the KV "
        f"cache ({rollout.notes[0]}); details: azr config show --memory"
    ]
    if learner.total > gpu:
        shortfalls.append(
            f"a learner rank needs ~{learner.total / GIB:.1f} GiB, the GPU has {gpu_gib:g} GiB: "
            "lower learner.micro_batch_tokens, turn on learner.activation_checkpointing or add "
            "learner workers"
        )
    if any("NO ROOM" in note for note in rollout.notes):
        shortfalls.append(f"rollout: {rollout.notes[-1]}")
    # The engines' dtype on the wire (learner.group.wire_dtype): bf16 halves fp32's bytes.
    wire = config.rollout.dtype if config.rollout.dtype in ("bfloat16", "float16") else "float32"
    sync_bytes = shape.parameters * (2 if wire != "float32" else 4)
    lines.append(
        f"weight sync: {sync_bytes / 1e9:.1f} GB per sync in {wire} from learner rank 0 to "
        f"{config.rollout.num_actors} engines (NCCL broadcast)"
    )
    return lines


def _gpu_summary(nodes: list[NodePlan]) -> str:
    free = sum(n.shape.gpus - n.gpus_used for n in nodes)
    return f"{len(nodes)} GPU node(s), {free} GPU(s) free"


def load_cluster(path: str | Path) -> dict[str, Any]:
    """A `ray_cluster.yaml`, as written (Ray's own validation runs in the deploy tests)."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or "available_node_types" not in data:
        raise ValueError(f"{path}: not a Ray cluster launcher config (no available_node_types)")
    return data
