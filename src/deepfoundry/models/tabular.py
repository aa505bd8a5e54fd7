"""MLP for table rows with a learned embedding per categorical column (entity embeddings).

Input ``x`` of shape ``(B, F)`` is ``[numeric (B, num_numeric) | codes (B, k)]`` as built by
:class:`deepfoundry.data.preprocess.TabularPreprocessor` with ``encoding: embedding``: column ``j`` of
the codes holds an integer in ``[0, cardinalities[j])`` (0 = a category not seen in training). The model
computes

    h_0 = concat(x_num, E_1[c_1], ..., E_k[c_k])        # (B, num_numeric + sum_j d_j)
    h_{l+1} = dropout(act(BN(W_l h_l + b_l)))           # hidden layers, as in models/mlp.py
    logits = W_out h_L + b_out                          # (B, num_classes)

with ``E_j`` a ``(cardinalities[j], d_j)`` table; ``d_j = embedding_dim`` or, when unset, the rule
``min(max_embedding_dim, round(1.6 * cardinalities[j] ** 0.56))`` (fast.ai's). Without categorical codes
(``cardinalities=[]``, one-hot or ordinal encoding) it is the plain MLP.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import DeepfoundryError
from ..nn.activations import positive_int, probability
from ..registry import MODELS
from .mlp import dense_stack


def embedding_size(cardinality: int, max_dim: int = 16) -> int:
    """fast.ai's rule of thumb ``round(1.6 * n ** 0.56)``, capped at ``max_dim``.

    >>> embedding_size(10), embedding_size(43)
    (6, 13)
    """
    return max(1, min(max_dim, round(1.6 * cardinality ** 0.56)))


class TabularMLP(nn.Module):
    """Embeddings of categorical codes concatenated with numeric columns, then an MLP and a linear head.

    Args:
        num_numeric: leading float columns of the input.
        cardinalities: size of each categorical column's embedding table (categories + 1 for unseen).
        num_classes: output size (1 for scalar regression).
        hidden_sizes: widths of the hidden layers.
        embedding_dims: width of each embedding table.
        activation, dropout, batch_norm: as in :class:`~deepfoundry.models.mlp.MLP`.
        embedding_dropout: dropout on the concatenated embeddings.
    """

    def __init__(self, num_numeric: int, cardinalities: Sequence[int], num_classes: int,
                 hidden_sizes: Sequence[int], embedding_dims: Sequence[int], activation: str = "relu",
                 dropout: float = 0.0, batch_norm: bool = False, embedding_dropout: float = 0.0) -> None:
        super().__init__()
        self.num_numeric = num_numeric
        self.embeddings = nn.ModuleList(nn.Embedding(n, d) for n, d in zip(cardinalities, embedding_dims))
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        layers, width = dense_stack(num_numeric + sum(embedding_dims), hidden_sizes, activation, dropout, batch_norm)
        self.body = nn.Sequential(*layers)  # (B, num_numeric + sum d_j) -> (B, width)
        self.head = nn.Linear(width, num_classes)  # (B, width) -> (B, num_classes)
        self.embedded = nn.Identity()  # h_0, named so that explanations can attribute to it (no parameters)
        # input column of each h_0 dimension: numeric j -> j, embedding j's dims -> num_numeric + j
        self.register_buffer("column_of_dim", torch.tensor(
            list(range(num_numeric)) + [num_numeric + j for j, d in enumerate(embedding_dims) for _ in range(d)]),
            persistent=False)

    def explain_layers(self) -> dict[str, object]:
        """Where attributions are taken (``deepfoundry explain``): the output of ``embedded`` (h_0, continuous
        even for categorical codes), and the input column of each of its dimensions to sum them back."""
        return {"layer": self.embedded, "columns": self.column_of_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``h_L`` (B, hidden_sizes[-1])."""
        parts = [x[:, :self.num_numeric]]
        if len(self.embeddings):
            codes = x[:, self.num_numeric:].long()  # (B, k) exact: codes are small integers stored as float32
            emb = torch.cat([table(codes[:, j]) for j, table in enumerate(self.embeddings)], dim=1)
            parts.append(self.embedding_dropout(emb))
        return self.body(self.embedded(torch.cat(parts, dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("mlp_tabular")
def mlp_tabular(*, in_features: int | None = None, num_classes: int | None = None, num_numeric: int | None = None,
                cardinalities: Sequence[int] = (), hidden_sizes: Sequence[int] = (256, 128),
                embedding_dim: int | None = None, max_embedding_dim: int = 16, activation: str = "relu",
                dropout: float = 0.0, batch_norm: bool = False, embedding_dropout: float = 0.0) -> TabularMLP:
    """MLP for table rows with one learned embedding per categorical column (data 'table-csv', 'adult').

    ``num_numeric`` and ``cardinalities`` come from the data (``info['model_context']``).

    >>> m = mlp_tabular(num_classes=2, num_numeric=3, cardinalities=[5, 9], hidden_sizes=[8])
    >>> m(torch.tensor([[0.1, -1.0, 2.0, 4, 0]])).shape
    torch.Size([1, 2])
    """
    if num_classes is None:
        raise DeepfoundryError("mlp_tabular needs num_classes (the output size; 1 for regression); set model.num_classes")
    cardinalities = [positive_int(f"cardinalities[{i}]", c) for i, c in enumerate(cardinalities or [])]
    if num_numeric is None:
        if in_features is None:
            raise DeepfoundryError("mlp_tabular needs num_numeric or in_features; use it with data 'table-csv' or 'adult', "
                                   "which provide them")
        num_numeric = in_features - len(cardinalities)
    if num_numeric < 0 or (num_numeric == 0 and not cardinalities):
        raise DeepfoundryError(f"mlp_tabular needs at least one input column; received num_numeric={num_numeric}, "
                               f"cardinalities={cardinalities}")
    if isinstance(hidden_sizes, int):
        hidden_sizes = (hidden_sizes,)
    hidden_sizes = tuple(positive_int(f"hidden_sizes[{i}]", s) for i, s in enumerate(hidden_sizes))
    dims = [positive_int("embedding_dim", embedding_dim) if embedding_dim is not None
            else embedding_size(c, positive_int("max_embedding_dim", max_embedding_dim)) for c in cardinalities]
    return TabularMLP(num_numeric, cardinalities, positive_int("num_classes", num_classes), hidden_sizes, dims,
                      activation=activation, dropout=probability("dropout", dropout), batch_norm=bool(batch_norm),
                      embedding_dropout=probability("embedding_dropout", embedding_dropout))
