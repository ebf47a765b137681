"""scipy's side of `cargo bench --bench drift`: the same statistics on the same samples.

Prints {"n": {"ms": best of 5, "psi": ..., "ks_p": ...}} for each size given.
"""
import json
import sys
import time

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon


def sample(n, mult, modulus, scale, shift):
    i = np.arange(n, dtype=np.int64)
    return ((i * mult) % modulus) / modulus * scale + shift


def score(ref, cur):
    edges = np.quantile(ref, np.arange(1, 10) / 10, method="linear")
    p = np.bincount(np.searchsorted(edges, ref, "left"), minlength=10) / len(ref)
    q = np.bincount(np.searchsorted(edges, cur, "left"), minlength=10) / len(cur)
    pc, qc = np.clip(p, 1e-4, None), np.clip(q, 1e-4, None)
    out = {"psi": float(np.sum((qc - pc) * np.log(qc / pc)))}
    out["kl"] = float(stats.entropy(pc, qc))
    out["js"] = float(jensenshannon(p, q))
    out["js2"] = float(jensenshannon(p, q, 2))
    out["hellinger"] = float(np.sqrt(1 - np.sum(np.sqrt(p * q))))
    table = np.array([p * len(ref), q * len(cur)])
    table = table[:, table.sum(0) > 0]
    out["chi2"] = float(stats.chi2_contingency(table, correction=False).pvalue)
    out["ks_p"] = float(stats.ks_2samp(ref, cur).pvalue)
    w = stats.wasserstein_distance(ref, cur)
    out["w_norm"] = float(w / np.std(ref))
    return out


result = {}
for n in map(int, sys.argv[1:]):
    ref = sample(n, 7919, 1_000_003, 1.0, 0.0)
    cur = sample(n, 104_729, 1_000_033, 1.05, 0.01)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        out = score(ref, cur)
        best = min(best, time.perf_counter() - started)
    out["ms"] = best * 1e3
    result[str(n)] = out
print(json.dumps(result))
