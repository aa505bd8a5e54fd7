"""Responsible AI: fairness audits, explanations, differential privacy (DP-SGD), federated learning, model cards."""
