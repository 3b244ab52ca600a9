"""Resurgence Gate: a safety-regression gate for concept resurgence in unlearned text-to-image models."""

__version__ = "0.1.0"
