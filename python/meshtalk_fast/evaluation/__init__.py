"""Evaluation of a trained model: ``evaluate`` (the report), ``metrics`` and ``plots``."""
