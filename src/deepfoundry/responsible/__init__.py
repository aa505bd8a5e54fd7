"""Responsible AI: fairness audits and mitigation (``fairness.py``), explanations (``explain.py``).

Kept light: importing this package loads neither fairlearn nor captum; each module imports its
library when used and names the extra to install when it is missing (``deepfoundry[responsible]``).
"""
