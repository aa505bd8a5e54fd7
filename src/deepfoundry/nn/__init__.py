"""Reusable named parts the models are built from: activations and pooling by name, explicit recurrent cells."""
from .activations import ACTIVATIONS, POOLS, make_activation, make_pool
from .recurrent import ExplicitRecurrent, gru_cell, hidden_state_gradients, lstm_cell, rnn_cell

__all__ = ["ACTIVATIONS", "POOLS", "ExplicitRecurrent", "gru_cell", "hidden_state_gradients", "lstm_cell",
           "make_activation", "make_pool", "rnn_cell"]
