"""RolloutGroup: M RolloutActors behind one generate/update_weights call."""

from __future__ import annotations

import ray

from actors.rollout import RolloutActor, resolve_device
from actors.types import Generation
from azr.config import RolloutConfig, SamplingConfig


def split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges covering `count` items, sizes differing by at most one."""
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for part in range(parts):
        stop = start + base + (1 if part < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


class RolloutGroup:
    """``config.num_actors`` rollout actors; prompts are spread over them, results keep order."""

    def __init__(self, model_path: str, config: RolloutConfig) -> None:
        self.config = config
        device = resolve_device(config)
        if device == "cpu":
            options = {
                "num_cpus": config.reserved_cpus,
                "runtime_env": {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}},
            }
        else:
            options = {"num_cpus": 1, "num_gpus": config.tensor_parallel_size}
        self.actors = [
            RolloutActor.options(name=None, **options).remote(model_path, config, index)
            for index in range(config.num_actors)
        ]
        # Surface construction errors (bad checkpoint, OOM) here, not at the first generate.
        infos = ray.get([actor.info.remote() for actor in self.actors])
        self.weight_dtype: str = infos[0]["dtype"]
        """The engines' parameter dtype ("bfloat16", "float32" ...): weights travel in it."""

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[Generation]:
        """Generate for every prompt (spread over the actors); one Generation per prompt, in order."""
        ranges = [
            (start, stop)
            for start, stop in split_evenly(len(prompts), len(self.actors))
            if stop > start
        ]
        refs = [
            actor.generate.remote(prompts[start:stop], sampling, start)
            for actor, (start, stop) in zip(self.actors, ranges, strict=True)
        ]
        return [generation for part in ray.get(refs) for generation in part]

    def start_update(self, bucket_refs: list[ray.ObjectRef], version: int) -> list[ray.ObjectRef]:
        """Start loading the same weight buckets into every actor in place; one ref per actor
        (its report), so the caller can wait on them with its own deadline."""
        return [a.update_weights.remote(bucket_refs, version) for a in self.actors]

    def update_weights(self, bucket_refs: list[ray.ObjectRef], version: int) -> list[dict]:
        """Load the same weight buckets into every actor in place; one report per actor."""
        return ray.get(self.start_update(bucket_refs, version))

    def prompt_logprobs(self, token_ids: list[list[int]]) -> list[list[list[float]]]:
        """Every actor's `RolloutEngine.prompt_logprobs` of the same sequences, in actor order
        (the weight-sync check compares each engine with the learner)."""
        return ray.get([actor.prompt_logprobs.remote(token_ids) for actor in self.actors])

    def infos(self) -> list[dict]:
        """Every actor's `RolloutEngine.info` (device, dtype, max_model_len, stop ids ...)."""
        return ray.get([actor.info.remote() for actor in self.actors])

    def max_model_len(self) -> int:
        """The smallest prompt + response limit of the engines (the config's, capped to the
        model's own)."""
        return min(info["max_model_len"] for info in self.infos())

    def policy_versions(self) -> list[int]:
        """The version each actor serves."""
        return ray.get([actor.policy_version.remote() for actor in self.actors])

    def shutdown(self) -> None:
        """Stop every actor (their engines and memory go with them)."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
