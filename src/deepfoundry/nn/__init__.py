"""Reusable named parts the models are built from: activations and pooling by name."""
from .activations import ACTIVATIONS, POOLS, make_activation, make_pool

__all__ = ["ACTIVATIONS", "POOLS", "make_activation", "make_pool"]
