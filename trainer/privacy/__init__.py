"""Differential privacy: accounting, the budget ledger, DP k-means, the ε preview and the audit."""
