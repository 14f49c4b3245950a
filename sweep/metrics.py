"""The names of the metrics every run logs, legal MLflow names that line up across runs.

`eval/<set>/<metric>` at the full size, `eval/<set>/<metric>/dim_<d>` at each Matryoshka size d.
"""

from __future__ import annotations

from collections.abc import Sequence

EVAL_PREFIX = "eval/"
TRAIN_STEP = "train/step"
TRAIN_LOSS = "train/loss"
TRAIN_LEARNING_RATE = "train/learning_rate"
TRAIN_SAMPLES_PER_SECOND = "train/samples_per_second"
TRAIN_EPOCH = "train/epoch"
TRAIN_SET_PREFIX = "train_set/"  # several training sets: train_set/<set>/loss and train_set/<set>/steps
TRIAL_STARTUP = "trial/startup_seconds"  # Tune started the trial -> its first step ended
TRIAL_TEARDOWN = "trial/teardown_seconds"  # its last logged loss -> its run closed

RETRIEVAL_METRICS = {  # our name -> (sentence-transformers' result key, k)
    "ndcg_at_10": ("ndcg@k", 10),
    "mrr_at_10": ("mrr@k", 10),
    "map_at_100": ("map@k", 100),
    "recall_at_1": ("recall@k", 1),
    "recall_at_10": ("recall@k", 10),
    "recall_at_100": ("recall@k", 100),
}
CLASS_METRICS = ("map_at_r", "r_precision", "precision_at_1", "knn_accuracy_at_10")  # Musgrave et al. 2020
METRICS = {
    "retrieval": tuple(RETRIEVAL_METRICS),
    "sts": ("spearman_cosine",),
    "triplet": ("cosine_accuracy",),
    "classes": CLASS_METRICS,
}
HEADLINE = {"retrieval": "ndcg_at_10", "sts": "spearman_cosine", "triplet": "cosine_accuracy", "classes": "map_at_r"}


def train_set_metric(label: str, what: str) -> str:
    """A metric of one of several training sets: its last loss (`loss`) or the steps it has had (`steps`)."""
    return f"{TRAIN_SET_PREFIX}{label}/{what}"


def metric_name(dataset: str, metric: str, dim: int | None = None) -> str:
    return f"{EVAL_PREFIX}{dataset}/{metric}" + ("" if dim is None else f"/dim_{dim}")


def is_eval(name: str) -> bool:
    """Whether a metric name is an evaluation metric (`eval/<set>/...`)."""
    return name.startswith(EVAL_PREFIX)


def eval_set(name: str) -> str:
    """The eval set an evaluation metric belongs to."""
    return name.removeprefix(EVAL_PREFIX).split("/", 1)[0]


def headline(eval_set_type: str, name: str) -> str:
    """The metric a sweep optimises for an evaluation set (by default)."""
    return metric_name(name, HEADLINE[eval_set_type])


def metric_names(eval_set_type: str, name: str, dims: Sequence[int] | None = None) -> list[str]:
    """Every metric an evaluation set of this type produces, at the full size and at `dims`."""
    names = []
    for metric in METRICS[eval_set_type]:
        names.append(metric_name(name, metric))
        names += [metric_name(name, metric, d) for d in sorted(set(dims or ()), reverse=True)]
    return names
