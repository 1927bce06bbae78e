"""Evaluation: full ranking, the sampled protocol and popularity-group breakdowns."""

from dslrec.evaluate.groups import (
    group_counts,
    item_group_metrics,
    item_groups,
    popularity_groups,
    user_group_metrics,
    user_groups,
)
from dslrec.evaluate.metrics import METRICS, rank_metrics
from dslrec.evaluate.ranking import UserMetrics, evaluate, rank_users, topk_ordered
from dslrec.evaluate.sampled import sampled_evaluate, sampled_negatives

__all__ = [
    "METRICS",
    "UserMetrics",
    "evaluate",
    "group_counts",
    "item_group_metrics",
    "item_groups",
    "popularity_groups",
    "rank_metrics",
    "rank_users",
    "sampled_evaluate",
    "sampled_negatives",
    "topk_ordered",
    "user_group_metrics",
    "user_groups",
]
