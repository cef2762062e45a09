"""``hftransfer rank``: transferability of candidate source models before training.

``scores`` holds the estimators (LogME, LEEP, a cross-validated probe, Kendall's τ); ``runner``
reads each candidate's frozen features (through the feature cache) and ranks them.
"""
from .runner import RankResult, rank

__all__ = ["RankResult", "rank"]
