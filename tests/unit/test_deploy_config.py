"""Deployment files: ray_cluster.yaml against Ray's own schema, the Grafana dashboard's
structure and its metrics against the code, Prometheus config, runtime env, submit.sh, and
the paper-scale configs. All fast (no cluster); the live check is test_observability.py."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from support import REPO_ROOT

from azr.config import load_config

DEPLOY = REPO_ROOT / "deploy"
CLUSTER_YAML = REPO_ROOT / "ray_cluster.yaml"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "azr.json"
DATASOURCE_YAML = DEPLOY / "grafana" / "provisioning" / "datasources" / "azr.yaml"
PROVIDER_YAML = DEPLOY / "grafana" / "provisioning" / "dashboards" / "azr.yaml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
SUBMIT_SH = DEPLOY / "submit.sh"
PAPER_CONFIGS = ["qwen2.5-7b-coder.yaml", "qwen2.5-14b-coder.yaml"]
CODE_PACKAGES = ["azr", "driver", "actors", "learner", "executor_pool", "buffer_service"]
REQUIRED_ROWS = [
    "Self-play health",
    "Executor pool",
    "Rollout",
    "Learner",
    "Weight sync",
    "Buffers",
]


def load_dashboard_builder():
    """deploy/grafana/build_dashboard.py as a module (it is a script, not a package)."""
    path = DEPLOY / "grafana" / "build_dashboard.py"
    spec = importlib.util.spec_from_file_location("azr_build_dashboard", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------ ray_cluster.yaml


def _prepared_cluster_config(raw: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config

    # prepare_config merges the provider's defaults.yaml exactly as `ray up` does.
    return prepare_config(copy.deepcopy(raw))


def test_ray_cluster_yaml_passes_rays_own_validator():
    from ray.autoscaler._private.util import validate_config

    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    validate_config(_prepared_cluster_config(raw))  # raises on any schema or consistency error


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c["available_node_types"]["executor"].update(num_gpus=1),  # unknown key
        lambda c: c["available_node_types"]["executor"]["resources"].update(executor=-1),
        lambda c: c.update(head_node_type="nonexistent"),
    ],
    ids=["unknown-node-key", "negative-resource", "missing-head-type"],
)
def test_rays_validator_rejects_a_broken_variant(break_it):
    """The validator really inspects our file: small breakages of it are rejected."""
    from ray.autoscaler._private.util import validate_config

    raw = yaml.safe_load(CLUSTER_YAML.read_text())
    break_it(raw)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(_prepared_cluster_config(raw))


def test_cluster_node_types_match_the_paper_configs():
    cluster = yaml.safe_load(CLUSTER_YAML.read_text())
    types = cluster["available_node_types"]
    assert {"head", "gpu", "executor"} <= set(types)
    for name in PAPER_CONFIGS:
        config = load_config(REPO_ROOT / "configs" / name)
        # The executor pool finds executor nodes by this custom resource.
        assert config.executor.resource in types["executor"]["resources"], name
        assert config.executor.backend == "docker", name
        # The executor nodes build the image the configs run.
        setup = "\n".join(types["executor"]["worker_setup_commands"])
        assert f"-t {config.executor.docker.image}" in setup, name
        assert "executor.Dockerfile" in setup
        # GPU work: rollout engines and learner workers fit the gpu node type's capacity
        # (p5.48xlarge = 8 GPUs per node).
        gpus = config.rollout.num_actors * config.rollout.tensor_parallel_size
        gpus += config.learner.num_workers * config.learner.gpus_per_worker
        assert types["gpu"]["node_config"]["InstanceType"] == "p5.48xlarge"
        assert gpus <= 8 * types["gpu"]["max_workers"], name
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("--metrics-export-port=8080" in c for c in ray_starts)
    assert all("RAY_AUTH_MODE=token" in c for c in ray_starts)


def test_docker_group_is_joined_over_a_fresh_login_before_ray_starts():
    """Setup commands and `ray start` share one multiplexed SSH connection opened before them,
    so the docker group must be added in initialization_commands (a fresh login each), on the
    executor node type, after Docker is installed; nowhere later."""
    cluster = yaml.safe_load(CLUSTER_YAML.read_text())
    executor = cluster["available_node_types"]["executor"]
    init = executor["initialization_commands"]
    joins = [i for i, c in enumerate(init) if "usermod -aG docker" in c]
    installs = [i for i, c in enumerate(init) if "docker.io" in c]
    assert joins and installs and installs[0] < joins[0]
    later = executor["worker_setup_commands"] + cluster["worker_start_ray_commands"]
    assert not [c for c in later if "usermod" in c or "docker.io" in c]
    # A node type's initialization_commands replace the global ones: the shared filesystem
    # must be mounted by both lists.
    assert any("/mnt/azr" in c for c in init)
    assert any("/mnt/azr" in c for c in cluster["initialization_commands"])


def test_every_node_mounts_the_shared_filesystem_where_runs_and_models_live():
    cluster = yaml.safe_load(CLUSTER_YAML.read_text())
    (mount,) = cluster["initialization_commands"]
    assert "/etc/fstab" in mount and "chown ubuntu:ubuntu /mnt/azr" in mount
    for name in PAPER_CONFIGS:
        config = load_config(REPO_ROOT / "configs" / name)
        assert config.output_dir.startswith("/mnt/azr/"), name
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    assert all("HF_HOME=/mnt/azr/hf" in c for c in starts if "ray start" in c)


def _sibling_imports(path: Path) -> set[str]:
    """Modules of ``path``'s own directory that ``path`` imports (as a package or a script)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        sibling_from = isinstance(node, ast.ImportFrom) and node.module == path.parent.name
        if isinstance(node, ast.Import) or sibling_from:
            names |= {alias.name for alias in node.names}
    return {f"{name}.py" for name in names if (path.parent / f"{name}.py").is_file()}


def test_every_file_of_the_fork_server_is_shipped():
    """forkserver.py and the sibling modules it imports reach both images, side by side."""
    from executor_pool.sandbox import FORKSERVER_FILES

    shipped, todo = set(), [FORKSERVER_FILES[0]]
    while todo:  # every sibling the entry script imports, directly or through another one
        name = todo.pop()
        shipped.add(name)
        todo += _sibling_imports(REPO_ROOT / "executor_pool" / name) - shipped
    assert shipped == set(FORKSERVER_FILES) == {"forkserver.py", "zygote.py", "program_runner.py"}
    cluster = yaml.safe_load(CLUSTER_YAML.read_text())
    setup = cluster["available_node_types"]["executor"]["worker_setup_commands"]
    (tar,) = [command for command in setup if "tar -c" in command]
    context = tar.split("tar -c", 1)[1].split("|", 1)[0].split()
    dockerfile = (DEPLOY / "docker" / "executor.Dockerfile").read_text()
    copies = [line.split()[1:] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    ignore = (DEPLOY / "docker" / "executor.Dockerfile.dockerignore").read_text().splitlines()
    build_script = (DEPLOY / "docker" / "build_test_image.sh").read_text()
    assert copies == [[*(f"executor_pool/{name}" for name in FORKSERVER_FILES), "/opt/azr/"]]
    assert context == ["deploy/docker/executor.Dockerfile"] + copies[0][:-1]
    assert [line for line in ignore if line.startswith("!")] == [f"!{p}" for p in copies[0][:-1]]
    for name in FORKSERVER_FILES:
        # Installed into the test image and part of the hash that decides its rebuilds.
        variable = re.search(
            rf'^(\w+)="\$ROOT/executor_pool/{re.escape(name)}"$', build_script, re.M
        )
        assert variable, name
        assert f'"${variable[1]}" "$stage/opt/azr/{name}"' in build_script, name
        hashed = re.search(r"^inputs_hash=.*$", build_script, re.M)[0]
        assert f'"${variable[1]}"' in hashed, name


# ---------------------------------------------------------------------- paper configs


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_keep_the_papers_settings(name):
    config = load_config(REPO_ROOT / "configs" / name)
    sp = config.selfplay
    assert (sp.batch_size, sp.num_references, sp.induction_inputs, sp.mc_samples) == (64, 6, 10, 8)
    assert config.learner.lr == 1e-6 and config.learner.clip_ratio == 0.2
    assert config.learner.grad_clip == 1.0
    assert config.rollout.solve.temperature == 1.0 and config.rollout.device == "cuda"
    assert config.model.path is not None and config.learner.device == "cuda"


# ------------------------------------------------------------------------ Grafana

# The part of Grafana's dashboard model (schemaVersion 39) this dashboard relies on.
PANEL_SCHEMA = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {"enum": ["row", "timeseries", "stat"]},
        "title": {"type": "string", "minLength": 1},
        "gridPos": {
            "type": "object",
            "required": ["x", "y", "w", "h"],
            "properties": {
                "x": {"type": "integer", "minimum": 0, "maximum": 23},
                "y": {"type": "integer", "minimum": 0},
                "w": {"type": "integer", "minimum": 1, "maximum": 24},
                "h": {"type": "integer", "minimum": 1},
            },
        },
        "datasource": {
            "type": "object",
            "required": ["type", "uid"],
            "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string"}},
        },
        "targets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["refId", "expr", "datasource"],
                "properties": {
                    "refId": {"type": "string", "pattern": "^[A-Z]$"},
                    "expr": {"type": "string", "minLength": 1},
                    "legendFormat": {"type": "string"},
                },
            },
        },
        "panels": {"type": "array", "maxItems": 0},
    },
}
DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "time", "templating"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {"type": "array", "minItems": 1, "items": PANEL_SCHEMA},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {"type": "object", "required": ["list"]},
    },
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def test_dashboard_json_is_the_generators_output():
    builder = load_dashboard_builder()
    assert DASHBOARD_JSON.read_text() == builder.render(), (
        "deploy/grafana/dashboards/azr.json is stale: run python deploy/grafana/build_dashboard.py"
    )


def test_dashboard_has_grafanas_structure(dashboard):
    jsonschema.validate(dashboard, DASHBOARD_SCHEMA)
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == REQUIRED_ROWS
    uid = yaml.safe_load(DATASOURCE_YAML.read_text())["datasources"][0]["uid"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        # No two panels overlap on Grafana's 24-column grid.
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_grafana_provisioning_files_point_at_the_dashboard():
    datasource = yaml.safe_load(DATASOURCE_YAML.read_text())
    assert datasource["apiVersion"] == 1
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    provider = yaml.safe_load(PROVIDER_YAML.read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]


def _metric_definitions() -> tuple[dict[str, str], list[tuple[re.Pattern[str], str]]]:
    """Every metric the code creates with ray.util.metrics: exact names and f-string patterns.

    Names built elsewhere and passed in a variable (a dict of names) are taken from string
    constants that look like metric names in the same module, with an unknown kind.
    """
    exact: dict[str, str] = {}
    patterns: list[tuple[re.Pattern[str], str]] = []
    for package in CODE_PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            source = path.read_text()
            if "MetricFactory" not in source:
                continue
            tree = ast.parse(source)
            for node in ast.walk(tree):
                is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
                if is_text and re.fullmatch(r"azr_[a-z0-9_]+", node.value):
                    exact.setdefault(node.value, "unknown")
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                # MetricFactory.counter / gauge / histogram (azr/metrics.py)
                kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if kind not in ("counter", "gauge", "histogram"):
                    continue
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    exact[first.value] = kind
                elif isinstance(first, ast.JoinedStr):
                    regex = "".join(
                        re.escape(part.value) if isinstance(part, ast.Constant) else "[a-z0-9_]+"
                        for part in first.values
                    )
                    patterns.append((re.compile(regex), kind))
    return exact, patterns


def test_every_dashboard_metric_is_recorded_by_the_code():
    builder = load_dashboard_builder()
    exact, patterns = _metric_definitions()
    for metric in builder.METRICS.values():
        kind = exact.get(metric.name)
        if kind is None:
            kind = next((k for p, k in patterns if p.fullmatch(metric.name)), None)
        assert kind is not None, f"{metric.name}: no Counter/Gauge/Histogram in the code"
        assert kind in (metric.kind, "unknown"), f"{metric.name}: the code records a {kind}"


def test_every_dashboard_query_uses_only_known_series(dashboard):
    builder = load_dashboard_builder()
    known = set()
    for metric in builder.METRICS.values():
        suffixes = ["_bucket", "_sum", "_count"] if metric.kind == "histogram" else [""]
        known |= {metric.series + s for s in suffixes}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used = set(re.findall(r"\bray_[a-z0-9_]+", target["expr"]))
            assert used and used <= known, f"{panel['title']}: unknown series {used - known}"


# ---------------------------------------------------------------------- Prometheus


def test_prometheus_config_discovers_nodes_through_rays_file():
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = config["scrape_configs"]
    files = job["file_sd_configs"][0]["files"]
    assert files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_config_passes_promtool():
    done = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------ runtime env, submit.sh


def test_runtime_env_is_valid_for_ray():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((DEPLOY / "runtime_env.yaml").read_text())
    assert "working_dir" not in env  # submit.sh sets it (--working-dir .)
    RuntimeEnv(**env, working_dir=str(REPO_ROOT))  # Ray's own field validation
    assert {".venv", ".scratch", ".git"} <= set(env["excludes"])


def _submit(args: list[str], **env: str) -> subprocess.CompletedProcess:
    # RAY=echo prints the exact `ray job submit` command line instead of contacting a cluster.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    full_env.update(HOME=env.pop("HOME", "/nonexistent"), RAY="echo", **env)
    return subprocess.run(
        [str(SUBMIT_SH), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=full_env,
        cwd=REPO_ROOT / "configs",
        check=False,
    )


def test_submit_builds_the_job_command_and_sends_the_token(tmp_path):
    token = tmp_path / "token"
    token.write_text("secret-token")
    done = _submit(
        ["--address", "http://head:8265", "qwen2.5-7b-coder.yaml", "executor.per_node=16"],
        RAY_AUTH_TOKEN_PATH=str(token),
    )
    assert done.returncode == 0, done.stderr
    command = done.stdout.split()
    assert command[:4] == ["job", "submit", "--address", "http://head:8265"]
    assert command[command.index("--working-dir") + 1] == "."
    assert command[command.index("--runtime-env") + 1] == str(DEPLOY / "runtime_env.yaml")
    assert command[command.index("--") + 1 :] == [
        "azr", "train", "--config", "configs/qwen2.5-7b-coder.yaml", "executor.per_node=16",
    ]  # fmt: skip
    assert "auth: token" in done.stderr
    # Resuming keeps the run's own config unless one is named.
    done = _submit(["--resume", "/runs/x", "selfplay.steps=9"], RAY_AUTH_TOKEN="t")
    assert done.returncode == 0, done.stderr
    tail = done.stdout.split()[done.stdout.split().index("--") + 1 :]
    assert tail == ["azr", "train", "--resume", "/runs/x", "selfplay.steps=9"]


def test_submit_refuses_token_mode_without_a_token_and_bad_configs(tmp_path):
    done = _submit(["qwen2.5-7b-coder.yaml"], RAY_AUTH_MODE="token")
    assert done.returncode == 2 and "no token" in done.stderr
    done = _submit(["missing.yaml"], RAY_AUTH_MODE="disabled")
    assert done.returncode == 2 and "not found" in done.stderr
    ignored = tmp_path / "ignored.yaml"  # tmp_path is under .scratch/, which git ignores
    ignored.write_text("run_name: x\n")
    if ignored.resolve().is_relative_to(REPO_ROOT):
        done = _submit([str(ignored)], RAY_AUTH_MODE="disabled")
        assert done.returncode == 2 and "git-ignored" in done.stderr
    with tempfile.TemporaryDirectory(dir="/tmp") as outside_dir:
        outside = Path(outside_dir) / "outside.yaml"
        outside.write_text("run_name: x\n")
        done = _submit([str(outside)], RAY_AUTH_MODE="disabled")
    assert done.returncode == 2 and "must live inside" in done.stderr


SHELL_SCRIPTS = ["deploy/submit.sh", "deploy/prometheus/install.sh", *map(str, sorted((DEPLOY / "docker").glob("*.sh")))]  # fmt: skip


def test_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, (
        "shellcheck is not installed (make test installs it: apt-get install shellcheck)"
    )
    done = subprocess.run(
        [shellcheck, *SHELL_SCRIPTS], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_submit_expands_arrays_the_way_bash_3_2_accepts_under_set_u():
    """macOS's /bin/bash 3.2 treats an empty "${a[@]}" as unbound under `set -u`: every array
    expansion must read ${a[@]+"${a[@]}"}."""
    script = (DEPLOY / "submit.sh").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    expansions = re.findall(r'(\$\{(\w+)\[[@*]\]\+)?"?\$\{(\w+)\[([@*])\]\}"?', code)
    assert expansions, "submit.sh expands no arrays: the check is looking at the wrong thing"
    unsafe = [name for guard, guarded, name, _ in expansions if guarded != name]
    assert unsafe == []
    assert re.search(r'\$\{\w+\[@\]\+"\$\{\w+\[@\]\}"\}', code)
