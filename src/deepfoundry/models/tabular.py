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


def _layer_sizes(hidden_sizes: int | Sequence[int], cardinalities: Sequence[int], embedding_dim: int | None,
                 max_embedding_dim: int) -> tuple[tuple[int, ...], list[int]]:
    """The checked hidden widths, and the embedding width of each categorical column (``embedding_dim``, or
    :func:`embedding_size` of its cardinality)."""
    if isinstance(hidden_sizes, int):
        hidden_sizes = (hidden_sizes,)
    hidden = tuple(positive_int(f"hidden_sizes[{i}]", s) for i, s in enumerate(hidden_sizes))
    dims = [positive_int("embedding_dim", embedding_dim) if embedding_dim is not None
            else embedding_size(c, positive_int("max_embedding_dim", max_embedding_dim)) for c in cardinalities]
    return hidden, dims


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
                 dropout: float = 0.0, batch_norm: bool = False, embedding_dropout: float = 0.0,
                 numeric_dims: Sequence[int] | None = None) -> None:
        super().__init__()
        self.num_numeric = num_numeric
        numeric_dims = list(numeric_dims) if numeric_dims is not None else [1] * num_numeric  # h_0 width per column
        self.embeddings = nn.ModuleList(nn.Embedding(n, d) for n, d in zip(cardinalities, embedding_dims))
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        layers, width = dense_stack(sum(numeric_dims) + sum(embedding_dims), hidden_sizes, activation, dropout,
                                    batch_norm)
        self.body = nn.Sequential(*layers)  # (B, num_numeric + sum d_j) -> (B, width)
        self.head = nn.Linear(width, num_classes)  # (B, width) -> (B, num_classes)
        self.embedded = nn.Identity()  # h_0, named so that explanations can attribute to it (no parameters)
        # input column of each h_0 dimension: numeric j -> j, embedding j's dims -> num_numeric + j
        self.register_buffer("column_of_dim", torch.tensor(
            [j for j, d in enumerate(numeric_dims) for _ in range(d)]
            + [num_numeric + j for j, d in enumerate(embedding_dims) for _ in range(d)]),
            persistent=False)

    def explain_layers(self) -> dict[str, object]:
        """Where attributions are taken (``deepfoundry explain``): the output of ``embedded`` (h_0, continuous
        even for categorical codes), and the input column of each of its dimensions to sum them back."""
        return {"layer": self.embedded, "columns": self.column_of_dim}

    def encode_numeric(self, x_num: torch.Tensor) -> torch.Tensor:
        """The numeric part of ``h_0``: the columns themselves (subclasses encode them)."""
        return x_num

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``h_L`` (B, hidden_sizes[-1])."""
        parts = [self.encode_numeric(x[:, :self.num_numeric])]
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
    hidden_sizes, dims = _layer_sizes(hidden_sizes, cardinalities, embedding_dim, max_embedding_dim)
    return TabularMLP(num_numeric, cardinalities, positive_int("num_classes", num_classes), hidden_sizes, dims,
                      activation=activation, dropout=probability("dropout", dropout), batch_norm=bool(batch_norm),
                      embedding_dropout=probability("embedding_dropout", embedding_dropout))


def ple_edges(quantiles: Sequence[float], bins: int) -> list[float]:
    """Bin edges ``b_0 < ... < b_T`` (``T <= bins``) from a column's training quantiles (``q_0 = min`` to
    ``q_Q = max``, evenly spaced levels): the quantiles at levels ``i / bins``, repeated values merged (a column
    with few distinct values, e.g. capital-gain's mass at 0, gets fewer bins). A constant column gets one
    bin ``[v, v + 1]``.

    >>> ple_edges([0, 0, 0, 1, 2, 3, 4, 5, 6], 4)
    [0.0, 2.0, 4.0, 6.0]
    """
    q = [float(v) for v in quantiles]
    if not q:
        raise DeepfoundryError("numeric_quantiles holds an empty list; each numeric column needs its quantiles")
    levels = len(q) - 1
    picked = sorted({q[round(i * levels / bins)] for i in range(bins + 1)} if bins < levels else set(q))
    return picked if len(picked) >= 2 else [picked[0], picked[0] + 1.0]


class PiecewiseLinearEncoding(nn.Module):
    r"""Piecewise-linear encoding of numeric columns (Gorishniy, Rubachev & Babenko, 2022).

    Column ``j`` with bin edges ``b_0 < b_1 < ... < b_T`` (training quantiles) maps a value ``x`` to
    ``T`` numbers, bin ``t = 1..T``:

    .. math::
        e_t(x) = \begin{cases} 0 & x < b_{t-1} \text{ and } t > 1 \\
                               1 & x \ge b_t \text{ and } t < T \\
                               \frac{x - b_{t-1}}{b_t - b_{t-1}} & \text{otherwise} \end{cases}

    so ``e(x) = [1, ..., 1, fraction of its bin, 0, ..., 0]``: a thermometer code that is linear within
    each bin (the first and last bins extrapolate beyond the training range). With ``d_embedding > 0``
    each column's code then goes through its own ``ReLU(e_j W_j + c_j)`` (``W_j`` of shape ``(T_j, d)``,
    the paper's "-LR" variant). Columns past ``len(edges)`` (missing indicators) pass through as they are.

    Shapes: ``(B, F)`` -> ``(B, sum_j T_j + passthrough)`` or ``(B, F_enc * d + passthrough)``.
    """

    def __init__(self, edges: Sequence[Sequence[float]], num_numeric: int, d_embedding: int = 0) -> None:
        super().__init__()
        self.encoded, self.passthrough = len(edges), num_numeric - len(edges)
        if self.passthrough < 0:
            raise DeepfoundryError(f"numeric_quantiles has {len(edges)} columns but the data has only {num_numeric} "
                                   f"numeric columns")
        self.bins = [len(e) - 1 for e in edges]
        width = max(self.bins) if self.bins else 1
        left = torch.zeros(len(edges), width)
        size = torch.ones(len(edges), width)
        valid = torch.zeros(len(edges), width, dtype=torch.bool)
        for j, e in enumerate(edges):
            t = torch.tensor(e, dtype=torch.float64)
            left[j, :len(e) - 1] = t[:-1].float()
            size[j, :len(e) - 1] = (t[1:] - t[:-1]).float()
            valid[j, :len(e) - 1] = True
        index = torch.arange(width)
        last = torch.tensor(self.bins).unsqueeze(1) - 1  # (F, 1) index of each column's last bin
        self.register_buffer("left", left)  # (F, T) b_{t-1}
        self.register_buffer("size", size)  # (F, T) b_t - b_{t-1}
        self.register_buffer("valid", valid)  # (F, T) bins that exist (columns have different T_j)
        self.register_buffer("clamp_low", index.unsqueeze(0).expand(len(edges), -1) > 0)  # t > 1
        self.register_buffer("clamp_high", index.unsqueeze(0) < last)  # t < T
        self.d_embedding = d_embedding
        if d_embedding:
            self.weight = nn.Parameter(torch.empty(len(edges), width, d_embedding))
            self.bias = nn.Parameter(torch.zeros(len(edges), d_embedding))
            nn.init.uniform_(self.weight, -width ** -0.5, width ** -0.5)
        if d_embedding:
            self.dims = [d_embedding] * self.encoded + [1] * self.passthrough
        else:
            self.dims = self.bins + [1] * self.passthrough

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """``e(x)`` (B, F, T), zero on bins a column does not have."""
        r = (x.unsqueeze(-1) - self.left) / self.size  # (B, F, T)
        r = torch.where(self.clamp_low, r.clamp(min=0.0), r)
        r = torch.where(self.clamp_high, r.clamp(max=1.0), r)
        return r * self.valid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.code(x[:, :self.encoded])  # (B, F, T)
        if self.d_embedding:
            h = torch.relu(torch.einsum("bft,ftd->bfd", e, self.weight) + self.bias).flatten(1)  # (B, F * d)
        else:
            h = e[:, self.valid]  # (B, sum T_j)
        return torch.cat([h, x[:, self.encoded:]], dim=1)


class EncodedTabularMLP(TabularMLP):
    """:class:`TabularMLP` whose numeric columns enter ``h_0`` through ``encoding`` (a module with ``dims``, the
    ``h_0`` width of each numeric column), kept as the attribute named by ``encoder`` (its state-dict prefix)."""

    encoder = "encoding"

    def __init__(self, encoding: nn.Module, num_numeric: int, cardinalities: Sequence[int],
                 num_classes: int, hidden_sizes: Sequence[int], embedding_dims: Sequence[int], **kwargs: object) -> None:
        super().__init__(num_numeric, cardinalities, num_classes, hidden_sizes, embedding_dims,
                         numeric_dims=encoding.dims, **kwargs)
        setattr(self, self.encoder, encoding)

    def encode_numeric(self, x_num: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.encoder)(x_num)


class TabularPLEMLP(EncodedTabularMLP):
    """:class:`TabularMLP` whose numeric columns enter ``h_0`` piecewise-linearly encoded (``self.ple``)."""

    encoder = "ple"


@MODELS.register("mlp_ple")
def mlp_ple(*, num_classes: int | None = None, num_numeric: int | None = None, cardinalities: Sequence[int] = (),
            numeric_quantiles: Sequence[Sequence[float]] | None = None,
            numeric_tree_edges: Sequence[Sequence[float]] | None = None, bin_edges: str = "quantile",
            bins: int = 48, d_embedding: int = 0,
            hidden_sizes: Sequence[int] = (256, 256), embedding_dim: int | None = None, max_embedding_dim: int = 16,
            activation: str = "relu", dropout: float = 0.1, batch_norm: bool = False,
            embedding_dropout: float = 0.0) -> TabularPLEMLP:
    r"""MLP on piecewise-linear encoded numeric columns and categorical embeddings (Gorishniy et al., 2022).

    .. math::
        \mathbf{h}_0 = [\,\mathrm{PLE}(x_1), \dots, \mathrm{PLE}(x_m), E_1[c_1], \dots, E_k[c_k]\,], \qquad
        \mathrm{PLE}(x)_t = \mathrm{clip}\Big(\frac{x - b_{t-1}}{b_t - b_{t-1}}, 0, 1\Big)

    (first bin unclipped below, last bin unclipped above; :class:`PiecewiseLinearEncoding`), then the
    hidden layers and head of :class:`TabularMLP`. The edges ``b`` come from the training rows only, in
    scaled units, passed by the data ('adult', 'table-csv') and saved with the run: ``bin_edges=quantile``
    takes up to ``bins`` quantiles of each numeric column (``numeric_quantiles``); ``bin_edges=tree`` the
    thresholds of a small decision tree fitted on each column alone to the training targets
    (``numeric_tree_edges``, :func:`deepfoundry.data.tabular.tree_edges`). A heavy-tailed column such as capital-gain,
    which standard scaling squeezes into a spike at 0, gets one input per occupied quantile bin instead.
    ``d_embedding > 0`` adds a per-column ``ReLU(Linear(T, d))`` after the encoding.

    >>> m = mlp_ple(num_classes=2, num_numeric=2, cardinalities=[4], numeric_quantiles=[[0, 1, 2, 3], [5, 6]],
    ...             hidden_sizes=[8])
    >>> m(torch.tensor([[1.5, 5.5, 2.0]])).shape, m.ple.bins
    (torch.Size([1, 2]), [3, 1])
    """
    if num_classes is None:
        raise DeepfoundryError("mlp_ple needs num_classes (the output size; 1 for regression); set model.num_classes")
    if num_numeric is None or numeric_quantiles is None:
        raise DeepfoundryError("mlp_ple needs the training quantiles of the numeric columns (num_numeric, "
                               "numeric_quantiles); use it with data 'adult' or 'table-csv', which provide them")
    cardinalities = [positive_int(f"cardinalities[{i}]", c) for i, c in enumerate(cardinalities or [])]
    if bin_edges == "quantile":
        edges = [ple_edges(q, positive_int("bins", bins)) for q in numeric_quantiles]
    elif bin_edges == "tree":
        if numeric_tree_edges is None:
            raise DeepfoundryError("model.bin_edges=tree needs the data's numeric_tree_edges (data 'adult' or "
                                   "'table-csv' provide them)")
        edges = [ple_edges(e, len(e)) for e in numeric_tree_edges]
    else:
        raise DeepfoundryError(f"model.bin_edges must be quantile or tree, received {bin_edges!r}")
    if int(d_embedding) < 0:
        raise DeepfoundryError(f"model.d_embedding must be >= 0 (0: no per-column layer), received {d_embedding}")
    encoding = PiecewiseLinearEncoding(edges, num_numeric, int(d_embedding))
    hidden_sizes, dims = _layer_sizes(hidden_sizes, cardinalities, embedding_dim, max_embedding_dim)
    return TabularPLEMLP(encoding, num_numeric, cardinalities, positive_int("num_classes", num_classes), hidden_sizes,
                         dims, activation=activation, dropout=probability("dropout", dropout),
                         batch_norm=bool(batch_norm), embedding_dropout=probability("embedding_dropout",
                                                                                     embedding_dropout))


class PeriodicEncoding(nn.Module):
    r"""Periodic embeddings of numeric columns, "PLR" (Gorishniy, Rubachev & Babenko, 2022).

    Column ``j`` with trainable frequencies ``c_j \in \mathbb{R}^k`` (initialised ``N(0, \sigma^2)``, truncated
    at ``3\sigma``) maps a value ``x`` to

    .. math::
        v_j(x) = [\cos(2\pi c_{j1} x), \dots, \cos(2\pi c_{jk} x), \sin(2\pi c_{j1} x), \dots, \sin(2\pi c_{jk} x)]
        \qquad h_j(x) = \mathrm{ReLU}(v_j(x) W_j + b_j)

    with ``W_j`` of shape ``(2k, d)`` per column (the "P-LR" of the paper; ``lite=True`` shares one ``W``
    across columns, the "PLR(lite)" of TabM). The frequencies are learned, so the encoding needs no bins
    or targets; ``sigma`` (the scale of the initial frequencies, in the units of the scaled inputs) is the one
    hyperparameter that matters. Columns past ``num_encoded`` (missing indicators) pass through as they are.

    Shapes: ``(B, F)`` -> ``(B, num_encoded * d + passthrough)``.
    """

    def __init__(self, num_encoded: int, num_numeric: int, frequencies: int = 48, sigma: float = 0.1,
                 d_embedding: int = 24, lite: bool = False) -> None:
        super().__init__()
        if not 0 <= num_encoded <= num_numeric:
            raise DeepfoundryError(f"the periodic encoding covers {num_encoded} numeric columns but the data has "
                                   f"{num_numeric}")
        self.encoded, self.passthrough = num_encoded, num_numeric - num_encoded
        self.frequency = nn.Parameter(torch.empty(num_encoded, frequencies))  # (F, k)
        nn.init.trunc_normal_(self.frequency, 0.0, sigma, -3 * sigma, 3 * sigma)
        bound = (2 * frequencies) ** -0.5  # nn.Linear's default range for fan-in 2k
        shape = (2 * frequencies, d_embedding) if lite else (num_encoded, 2 * frequencies, d_embedding)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_encoded, d_embedding).uniform_(-bound, bound))
        self.lite = lite
        self.dims = [d_embedding] * num_encoded + [1] * self.passthrough

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * torch.pi * x[:, :self.encoded, None] * self.frequency  # (B, F, k)
        v = torch.cat([torch.cos(z), torch.sin(z)], dim=-1)  # (B, F, 2k)
        mixed = v @ self.weight if self.lite else torch.einsum("bfk,fkd->bfd", v, self.weight)
        h = torch.relu(mixed + self.bias).flatten(1)  # (B, F * d)
        return torch.cat([h, x[:, self.encoded:]], dim=1)


class TabularPLRMLP(EncodedTabularMLP):
    """:class:`TabularMLP` whose numeric columns enter ``h_0`` through periodic embeddings (``self.plr``)."""

    encoder = "plr"


@MODELS.register("mlp_plr")
def mlp_plr(*, num_classes: int | None = None, num_numeric: int | None = None, cardinalities: Sequence[int] = (),
            numeric_quantiles: Sequence[Sequence[float]] | None = None, frequencies: int = 48, sigma: float = 0.1,
            d_embedding: int = 24, lite: bool = False, hidden_sizes: Sequence[int] = (256, 256),
            embedding_dim: int | None = None, max_embedding_dim: int = 16, activation: str = "relu",
            dropout: float = 0.1, batch_norm: bool = False, embedding_dropout: float = 0.0) -> TabularPLRMLP:
    r"""MLP on periodic embeddings of the numeric columns and categorical embeddings (Gorishniy et al., 2022).

    .. math::
        \mathbf{h}_0 = [\,\mathrm{ReLU}(\mathrm{Linear}_1(v(x_1))), \dots, \mathrm{ReLU}(\mathrm{Linear}_m(v(x_m))),
        E_1[c_1], \dots, E_k[c_k]\,], \qquad v(x) = [\cos 2\pi c x, \sin 2\pi c x]

    (:class:`PeriodicEncoding`; ``frequencies`` = k trainable frequencies per column drawn with scale
    ``sigma``), then the hidden layers and head of :class:`TabularMLP`. The data ('adult', 'table-csv') tell
    which leading columns are real numbers (``numeric_quantiles`` has one entry per column); the missing
    indicators after them pass through. Without that context every numeric column is encoded.

    >>> m = mlp_plr(num_classes=2, num_numeric=2, cardinalities=[4], frequencies=8, d_embedding=4, hidden_sizes=[8])
    >>> m(torch.tensor([[1.5, -0.5, 2.0]])).shape, m.plr.dims
    (torch.Size([1, 2]), [4, 4])
    """
    if num_classes is None:
        raise DeepfoundryError("mlp_plr needs num_classes (the output size; 1 for regression); set model.num_classes")
    if num_numeric is None:
        raise DeepfoundryError("mlp_plr needs num_numeric (the leading float columns); use it with data 'adult' or "
                               "'table-csv', which provide it")
    if not float(sigma) > 0:
        raise DeepfoundryError(f"model.sigma must be > 0 (the scale of the initial frequencies), received {sigma}")
    encoded = len(numeric_quantiles) if numeric_quantiles is not None else num_numeric
    encoding = PeriodicEncoding(encoded, num_numeric, positive_int("frequencies", frequencies), float(sigma),
                                positive_int("d_embedding", d_embedding), bool(lite))
    cardinalities = [positive_int(f"cardinalities[{i}]", c) for i, c in enumerate(cardinalities or [])]
    hidden_sizes, dims = _layer_sizes(hidden_sizes, cardinalities, embedding_dim, max_embedding_dim)
    return TabularPLRMLP(encoding, num_numeric, cardinalities, positive_int("num_classes", num_classes), hidden_sizes,
                         dims, activation=activation, dropout=probability("dropout", dropout),
                         batch_norm=bool(batch_norm), embedding_dropout=probability("embedding_dropout",
                                                                                     embedding_dropout))
