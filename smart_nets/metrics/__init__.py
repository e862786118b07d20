"""Metrics: ROC AUC with bootstrap confidence intervals and threshold metrics; tumour measurements in mm."""

from smart_nets.metrics.auc import bootstrap_auc, bootstrap_auc_difference, roc_auc, threshold_metrics
from smart_nets.metrics.measurements import tumour_measurements

__all__ = ["bootstrap_auc", "bootstrap_auc_difference", "roc_auc", "threshold_metrics", "tumour_measurements"]
