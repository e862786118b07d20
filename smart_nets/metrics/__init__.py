"""Metrics: ROC AUC with bootstrap confidence intervals and threshold metrics."""

from smart_nets.metrics.auc import bootstrap_auc, roc_auc, threshold_metrics

__all__ = ["bootstrap_auc", "roc_auc", "threshold_metrics"]
