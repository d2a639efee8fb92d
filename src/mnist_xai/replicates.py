"""Replicates: every random part of the verdict, drawn `quality.replicates` times with independent seeds, so that
its intervals describe the method rather than one draw.

Replicated: the decoy twin and the no-reliance twin (their training data, initialisation and order), the
ground-truth images drawn from the test set, the permuted-label network and its matched control, the randomised
networks of the randomisation checks and the images those checks use, and the trained model itself for the
faithfulness checks (deletion and insertion): replicate 0 is the pipeline's model (`base.seed`), replicates 1.. the
same training with their own seeds (stage train_replicates), each scored on its own share of the explained images.
Everything else is measured on the pipeline's model alone (a new `base.seed` re-trains it: `mnist-xai stability`
measures what that changes).

Replicate r's seed for one random source is drawn from NumPy's SeedSequence over (base.seed, source, r): independent
streams for every pair, and no two (base.seed, r) pairs share one, unlike base.seed + r.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOURCES = {"decoy": 1, "random_labels": 2, "randomisation": 3, "model": 4}
DECOY_MODELS = Path("models/decoy")
RANDOM_LABEL_MODELS = Path("models/random_labels")
TRAINED_MODEL = Path("models/model.pt")
RETRAINED_MODELS = Path("models/replicates")


def seed(base_seed: int, source: str, replicate: int) -> int:
    """The seed of one random source in one replicate: a 31-bit integer, fit for torch, NumPy and seed + k."""
    return int(np.random.SeedSequence([base_seed, SOURCES[source], replicate]).generate_state(1)[0] >> 1)


def decoy_model(replicate: int) -> Path:
    return DECOY_MODELS / f"decoy_{replicate}.pt"


def no_reliance_model(replicate: int) -> Path:
    return DECOY_MODELS / f"no_reliance_{replicate}.pt"


def permuted_label_model(replicate: int) -> Path:
    return RANDOM_LABEL_MODELS / f"permuted_{replicate}.pt"


def true_label_model(replicate: int) -> Path:
    return RANDOM_LABEL_MODELS / f"true_{replicate}.pt"


def trained_model(replicate: int) -> Path:
    """The trained model of one replicate: 0 is the pipeline's own (stage train), the others stage train_replicates'."""
    return TRAINED_MODEL if replicate == 0 else RETRAINED_MODELS / f"model_{replicate}.pt"
