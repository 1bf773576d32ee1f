"""Config loading, overrides, errors and dumping (azr/config/, azr config show)."""

import subprocess
import sys

import pytest
import yaml
from support import REPO_ROOT

from azr.config import (
    CONFIG_DIR,
    AZRConfig,
    ConfigError,
    Section,
    dump_config,
    load_config,
    parse_override,
)


def test_tiny_is_the_embedded_default_and_paper_defaults_hold():
    tiny = load_config()
    assert tiny.run_name == "tiny"
    paper = AZRConfig()
    assert paper.selfplay.batch_size == 64
    assert paper.selfplay.num_references == 6
    assert paper.selfplay.induction_inputs == 10
    assert paper.selfplay.mc_samples == 8
    assert paper.learner.lr == 1e-6
    assert paper.learner.clip_ratio == 0.2
    assert paper.learner.grad_clip == 1.0
    assert paper.executor.timeout_s == 10.0
    assert paper.executor.max_output_chars == 4000
    assert paper.rollout.solve.temperature == 1.0
    assert paper.selfplay.learnability_rule == "paper"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path):
    config = load_config(path)
    again = AZRConfig.model_validate(yaml.safe_load(dump_config(config)))
    assert again == config


def test_overrides_apply_with_yaml_typed_values():
    config = load_config(
        overrides=[
            "learner.lr=3e-6",
            "selfplay.mode=async",
            "executor.per_node=4",
            "model.path=/models/qwen",
            "selfplay.task_types=[deduction, induction]",
            "buffer.max_size=null",
        ]
    )
    assert config.learner.lr == 3e-6
    assert config.selfplay.mode == "async"
    assert config.executor.per_node == 4
    assert config.model.path == "/models/qwen"
    assert config.selfplay.task_types == ["deduction", "induction"]
    assert config.buffer.max_size is None


@pytest.mark.parametrize(
    ("override", "dotted"),
    [
        ("learner.lrr=1", "learner.lrr: unknown key"),
        ("nosection.x=1", "nosection: unknown key"),
        ("learner.lr=-1", "learner.lr:"),
        ("selfplay.mode=fast", "selfplay.mode:"),
        ("rollout.propose.top_p=2", "rollout.propose.top_p:"),
        ("executor.backend=vm", "executor.backend:"),
        ("selfplay.batch_size=many", "selfplay.batch_size:"),
    ],
)
def test_bad_key_or_value_names_the_dotted_path(override, dotted):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert dotted in str(info.value)


def test_cross_field_check_and_malformed_overrides():
    with pytest.raises(ConfigError, match="induction_inputs"):
        load_config(overrides=["selfplay.induction_inputs=5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("learner.lr")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(overrides=["seed.x=1"])


def test_bad_files_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("learner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("executor:\n  timeout_s: soon\n")
    with pytest.raises(ConfigError, match="executor.timeout_s"):
        load_config(wrong)


def _sections(model: type[Section]):
    yield model
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            yield from _sections(field.annotation)


def test_every_field_has_a_docstring():
    missing = [
        f"{section.__name__}.{name}"
        for section in _sections(AZRConfig)
        for name, field in section.model_fields.items()
        if not field.description
    ]
    assert missing == []


def test_cli_config_show_prints_resolved_yaml_and_fails_on_bad_key():
    cmd = [sys.executable, "-m", "driver.cli", "config", "show", "selfplay.batch_size=7"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert yaml.safe_load(out)["selfplay"]["batch_size"] == 7
    bad = subprocess.run(
        [sys.executable, "-m", "driver.cli", "config", "show", "learner.nope=1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "learner.nope: unknown key" in bad.stderr
    version = subprocess.run(
        [sys.executable, "-m", "driver.cli", "version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("azr ")


def test_docker_keys_of_0_1_still_load_with_a_warning(caplog: pytest.LogCaptureFixture):
    """`executor.docker_<key>` (0.1) maps onto `executor.docker.<key>` for one release."""
    with caplog.at_level("WARNING", logger="azr.config"):
        config = load_config(
            None, ["executor.docker_image=img:1", "executor.docker_cpus=3", "executor.slots=4"]
        )
    assert config.executor.docker.image == "img:1" and config.executor.docker.cpus == 3.0
    assert "executor.docker_image is deprecated: write executor.docker.image" in caplog.text
    assert load_config(None, ["executor.docker.image=img:2"]).executor.docker.image == "img:2"
    with pytest.raises(ConfigError, match="executor.docker.nope: unknown key"):
        load_config(None, ["executor.docker_nope=1"])


def test_engine_arguments_per_device():
    """CPU engines: eager, explicit KV cache, no chunked prefill. GPU engines: CUDA graphs by
    default, TP workers spawned locally (`mp`: inside a Ray placement group vLLM would
    otherwise pick its Ray executor and ask for more GPUs)."""
    from actors.rollout import engine_arguments

    rollout = load_config(REPO_ROOT / "configs" / "qwen2.5-7b-coder.yaml").rollout
    gpu = engine_arguments(rollout, "cuda", model_max_len=32768)
    assert gpu["enforce_eager"] is False and gpu["distributed_executor_backend"] == "mp"
    assert gpu["tensor_parallel_size"] == 2 and "kv_cache_memory_bytes" not in gpu
    cpu = engine_arguments(load_config(None).rollout, "cpu", model_max_len=1024)
    assert cpu["enforce_eager"] is True and cpu["enable_chunked_prefill"] is False
    assert cpu["max_model_len"] == 1024  # capped to the model's
    assert "distributed_executor_backend" not in cpu
    forced = rollout.model_copy(update={"enforce_eager": True})
    assert engine_arguments(forced, "cuda", None)["enforce_eager"] is True


def test_solve_weight_is_removed_and_zero_is_refused(caplog: pytest.LogCaptureFixture):
    """Per-(task, role) normalisation cancels a factor on the solve rewards; 0 silenced the
    solver's advantages. The old default still loads (with a warning); any other value fails."""
    for value in (0, 0.5):
        with pytest.raises(ConfigError, match=r"selfplay: .*solve_weight=.*was removed"):
            load_config(overrides=[f"selfplay.solve_weight={value}"])
    with caplog.at_level("WARNING", logger="azr.config"):
        config = load_config(overrides=["selfplay.solve_weight=1.0"])
    assert "selfplay.solve_weight has no effect" in caplog.text
    assert "solve_weight" not in dump_config(config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rollout.solve.n=2", "rollout.solve.n must be 1"),
        ("rollout.eval.n=3", "rollout.eval.n must be 1"),
        ("rollout.propose.max_tokens=2048", r"rollout.propose.max_tokens \(2048\) leaves no room"),
        ("rollout.max_model_len=256", r"rollout.propose.max_tokens \(256\) leaves no room"),
    ],
)
def test_sampling_that_cannot_work_fails_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_propose_n_above_one_loads():
    assert load_config(overrides=["rollout.propose.n=4"]).rollout.propose.n == 4


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("rollout.propose.temperature=0", "rollout.propose.temperature"),
        ("rollout.solve.temperature=0.000001", "rollout.solve.temperature"),
        ("rollout.propose.top_p=0.95", "rollout.propose.top_p"),
        ("rollout.solve.top_p=0.5", "rollout.solve.top_p"),
    ],
)
def test_training_sampling_the_learner_cannot_reproduce_is_refused(override, named):
    """Greedy or nucleus-truncated training samples have no behaviour distribution the
    learner can match; evaluation (not trained on) may be greedy."""
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(overrides=[override])
    assert load_config(overrides=["rollout.eval.temperature=0", "rollout.eval.top_p=0.9"])
