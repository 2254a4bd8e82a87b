"""Every setting of the metrics in one place (torch-fidelity's ``defaults.py``): the CLI's defaults, the fewest
samples a statistic takes, the bootstrap and FID∞ settings, and memory bounds. Imports nothing, so ``config.py``'s
mirrored values can be checked against it without torch."""

from __future__ import annotations

# KID and precision/recall settings follow torch-fidelity's defaults so numbers are comparable with published ones.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_K = 3
MIN_SAMPLES = PR_K + 1  # k-NN radii need k other points; covariance needs >= 2
GEN_CHUNK = 500  # images generated per call: bounds memory independently of --n and --batch-size
# Uncertainty within a run (no extra feature passes): bootstrap resamples of both feature sets. Fewer samples than
# dimensions (the demo): 200, each a small eigenproblem. Otherwise (10k vs 10k) each resample is two d×d covariances
# and a d×d eigenproblem, seconds on a CPU: 20, and a normal interval from their spread (see centred_interval).
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_RESAMPLES_LARGE = 20
QUANTILE_MIN_RESAMPLES = 100  # fewer: the interval's ends come from the replicates' standard deviation
# FID∞ (Chong & Forsyth 2020) from subsets of 50%, 60%, ..., 100% of both sets, FD_INF_DRAWS subsets per fraction
FD_INF_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FD_INF_DRAWS = 10
BOOTSTRAP_STREAM, FD_INF_STREAM = 0xB007, 0xF1D  # seed streams beside --seed's, so the KID subsets are unchanged
KID_BLOCK = 1024  # kernel rows at a time in the bootstrap KID: memory O(block × n)
GRAM_CHUNK = 1 << 22  # elements of the stacked cross-products per batch of resamples (32 MiB)
PR_BATCH = 4096  # rows per block of precision/recall's distance matrices
PR_SAVE_RAM_ABOVE = 5000  # larger sets: precision/recall in blocks without all N×N distances (same result)
