"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code", section 2.1.

With n samples of a problem of which c pass, ``pass@k = 1 - C(n - c, k) / C(n, k)``: the chance
that at least one of k samples drawn without replacement from the n passes. A benchmark's
pass@k is the mean over its problems. Computed as a product (never a huge binomial), exactly
as the paper's numerically stable form.
"""

from __future__ import annotations

from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """The estimate for one problem with ``n`` samples, ``c`` of them correct (k <= n)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for m in range(n - c + 1, n + 1):
        miss *= 1.0 - k / m
    return 1.0 - miss


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean of `pass_at_k` over problems given as (n, c) pairs; 0 for no problems."""
    if not counts:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
