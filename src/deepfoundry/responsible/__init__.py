"""Responsible AI: fairness audits and mitigation (``fairness.py``), explanations (``explain.py``),
differential privacy (``privacy.py``, DP-SGD), federated learning (``federated.py``) and model cards
(``model_card.py``).

Kept light: importing this package loads none of fairlearn, captum, opacus or flwr; each module imports
its library when used and names the extra to install when it is missing (``deepfoundry[responsible]``).
"""
