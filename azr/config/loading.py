"""Loading and dumping the tree: YAML files, ``section.key=value`` overrides, validation.

A bad file, override, key or value raises `ConfigError` naming the dotted path of what is wrong;
`dump_config`'s YAML loads back to an equal `AZRConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from azr.config.run import AZRConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "tiny.yaml"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted field path."""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: i + 1])}: is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"learner.lr=3e-6"`` → ``("learner.lr", 3e-6)``; values are YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key.strip()}: value {raw!r} is not valid YAML ({exc})") from None
    return key.strip(), value


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AZRConfig:
    """Load a YAML config (default: configs/tiny.yaml), apply overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for text in overrides or []:
        _set_dotted(tree, *parse_override(text))
    try:
        return AZRConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def dump_config(config: AZRConfig) -> str:
    """The resolved config as YAML (loadable again by `load_config`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
