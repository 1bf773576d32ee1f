"""The FSDP2 learner group: TRR++ clipped policy-gradient updates, checkpoints, weight sync.

Public entry point: `learner.group.LearnerGroup` (see its docstring); the loss lives in
`learner.loss`, batching in `learner.batching`, checkpoint files in `learner.checkpoint`.
"""
