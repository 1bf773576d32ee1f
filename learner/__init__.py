"""The FSDP2 learner group: TRR++ clipped policy-gradient updates, checkpoints, weight sync.

Public entry point: `learner.group.LearnerGroup` (see its docstring); the loss lives in
`learner.loss`, packing and micro-batch plans in `learner.batching`, the chunked
temperature-aware logprobs in `learner.logprobs`, the model's preparation (activation
checkpointing, FSDP2 sharding, the packed forward) in `learner.policy`, checkpoint files in
`learner.checkpoint`. Memory figures and their rationale: docs/learner.md.
"""
