"""Graph neural networks for node classification, on torch_geometric's message-passing layers.

Every model here is a :class:`GNN`: ``depth`` message-passing layers, each hidden one followed by an
optional normalisation, an activation and an optional residual connection, with dropout before
every layer (Kipf & Welling's placement). All share one call::

    logits = model(x, edge_index, adjacency)   # x (N, F), edge_index (2, E), adjacency (N, N) sparse -> (N, C)
    h = model.embed(x, edge_index, adjacency)  # (N, H): the node embeddings the output layer reads

``adjacency`` is the GCN propagation matrix ``D^-1/2 (A + I) D^-1/2``
(:func:`deepfoundry.nn.graph.normalized_adjacency`) that :mod:`deepfoundry.data.graphs` computes once
per data set; only ``gcn`` uses it (a sparse matrix product per layer instead of normalising and
scattering the edges every epoch), and computes it from ``edge_index`` when it is not given. The
other layers read ``edge_index``.

>>> import torch
>>> from deepfoundry.models import build_model
>>> model = build_model("gcn", {}, {"in_features": 5, "num_classes": 3})
>>> model(torch.randn(4, 5), torch.tensor([[0, 1, 2], [1, 2, 3]])).shape
torch.Size([4, 3])
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError
from ..nn.graph import clean_edges, normalized_adjacency
from ..registry import MODELS

NORMS = ("none", "batch", "layer")
DECAY_SCOPES = ("all", "first")  # which layers optim.weight_decay applies to
ConvFactory = Callable[[int, int, bool], nn.Module]  # (in, out, is_last) -> layer


def _norm(kind: str, size: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(size)
    if kind == "layer":
        return nn.LayerNorm(size)
    return nn.Identity()


class GNN(nn.Module):
    """``depth`` message-passing layers: ``h_{l+1} = act(norm(conv_l(dropout(h_l)))) [+ skip(h_l)]``,
    the last layer without norm, activation or skip; it outputs the class logits.

    Args:
        conv: ``conv(in_size, out_size, is_last) -> layer``; ``layer(h, graph)`` where graph is
            the adjacency (``uses_adjacency``) or ``edge_index``.
        sizes: ``[in_features, hidden..., num_classes]``, the layers' input and output widths
            (``depth + 1`` items; a GAT hidden width is ``heads * hidden_size``).
        dropout: dropout probability before every layer (input features included).
        residual: add ``h_l`` (projected by a linear map when the sizes differ) to every hidden layer.
        norm: ``none``, ``batch`` (BatchNorm1d over nodes) or ``layer`` (LayerNorm per node).
        activation: ``relu`` or ``elu``.
        uses_adjacency: the layers take the normalised sparse adjacency instead of ``edge_index``.
        weight_decay_scope: ``all`` (``optim.weight_decay`` on every parameter) or ``first`` (on the first
            layer only, as Kipf & Welling's GCN; see :meth:`param_groups`).
    """

    def __init__(self, conv: ConvFactory, sizes: list[int], dropout: float = 0.5, residual: bool = False,
                 norm: str = "none", activation: str = "relu", uses_adjacency: bool = False,
                 weight_decay_scope: str = "all") -> None:
        super().__init__()
        if weight_decay_scope not in DECAY_SCOPES:
            raise DeepfoundryError(f"model.weight_decay_scope must be one of {', '.join(DECAY_SCOPES)}, received "
                                   f"{weight_decay_scope!r}")
        self.weight_decay_scope = weight_decay_scope
        if len(sizes) < 2:
            raise DeepfoundryError(f"a GNN needs depth >= 1, received depth={len(sizes) - 1}")
        if norm not in NORMS:
            raise DeepfoundryError(f"model.norm must be one of {', '.join(NORMS)}, received {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise DeepfoundryError(f"model.dropout must be in [0, 1), received {dropout}")
        depth = len(sizes) - 1
        self.convs = nn.ModuleList(conv(sizes[i], sizes[i + 1], i == depth - 1) for i in range(depth))
        self.hidden_sizes = sizes[1:-1]
        self.norms = nn.ModuleList(_norm(norm, s) for s in self.hidden_sizes)
        self.skips = nn.ModuleList(
            (nn.Identity() if sizes[i] == s else nn.Linear(sizes[i], s, bias=False)) if residual else nn.Identity()
            for i, s in enumerate(self.hidden_sizes))
        self.dropout, self.residual, self.uses_adjacency = dropout, residual, uses_adjacency
        self.act = {"relu": F.relu, "elu": F.elu}[activation]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups (:func:`deepfoundry.optim.parameter_groups`): with ``weight_decay_scope="first"``
        the first layer's parameters in one group (the optimizer's weight decay) and the rest in one with
        ``weight_decay = 0`` (Kipf & Welling's L2 term covers only the first layer); otherwise one group."""
        if self.weight_decay_scope == "all":
            return [{"params": list(self.parameters()), "lr": lr, "name": "all"}]
        first = list(self.convs[0].parameters())
        ids = {id(p) for p in first}
        return [{"params": first, "lr": lr, "name": "first layer"},
                {"params": [p for p in self.parameters() if id(p) not in ids], "lr": lr, "weight_decay": 0.0,
                 "name": "other layers (no weight decay)"}]

    def _graph(self, x: torch.Tensor, edge_index: torch.Tensor, adjacency: torch.Tensor | None) -> torch.Tensor:
        if not self.uses_adjacency:
            return edge_index
        if adjacency is None:
            n = x.shape[0]
            adjacency = normalized_adjacency(clean_edges(edge_index.cpu(), n), n).to(x.device)
        return adjacency

    def _input(self, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        """Dropout on the layer input. Sparse features (bag-of-words graphs) drop only their stored
        non-zeros, which is the same random map as dense dropout (a dropped zero stays zero) on 1.3%
        of the entries on Cora; layers that need dense inputs get them densified afterwards."""
        if not x.layout == torch.sparse_csr:
            return F.dropout(x, self.dropout, self.training)
        values = F.dropout(x.values(), self.dropout, self.training)
        x = torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, x.shape, check_invariants=False)
        return x if getattr(layer, "accepts_sparse", False) else x.to_dense()

    def _embed(self, x: torch.Tensor, graph: torch.Tensor) -> torch.Tensor:
        for conv, norm, skip in zip(self.convs[:-1], self.norms, self.skips):
            inp = self._input(x, conv)
            h = self.act(norm(conv(inp, graph)))  # (N, hidden)
            if self.residual:
                h = h + skip(x.to_dense() if x.layout == torch.sparse_csr else x)
            x = h
        return x

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, adjacency: torch.Tensor | None = None) -> torch.Tensor:
        """Node embeddings (N, H) after the last hidden layer (the input features when depth is 1)."""
        return self._embed(x, self._graph(x, edge_index, adjacency))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, adjacency: torch.Tensor | None = None) -> torch.Tensor:
        graph = self._graph(x, edge_index, adjacency)
        h = self._embed(x, graph)
        return self.convs[-1](self._input(h, self.convs[-1]), graph)  # (N, C)


class GCNLayer(nn.Module):
    """``H' = A_hat (H W) + b`` with the precomputed sparse ``A_hat = D^-1/2 (A+I) D^-1/2``: the
    operator of ``torch_geometric.nn.GCNConv(normalize=False)``, written as two matrix products so
    that ``H`` may be a sparse CSR matrix (bag-of-words features: ``H W`` then costs nnz(H) * out).
    Glorot-uniform weight and zero bias, as PyG initialises GCNConv."""

    accepts_sparse = True

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_size, out_size))
        self.bias = nn.Parameter(torch.zeros(out_size))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return adjacency @ (x @ self.weight) + self.bias  # (N, F) -> (N, O) -> (N, O)


def _sizes(in_features: int, num_classes: int, hidden_size: int, depth: int) -> list[int]:
    if depth < 1:
        raise DeepfoundryError(f"model.depth must be >= 1, received {depth}")
    return [in_features] + [hidden_size] * (depth - 1) + [num_classes]


@MODELS.register("gcn")
def gcn(*, in_features: int, num_classes: int, hidden_size: int = 16, depth: int = 2, dropout: float = 0.5,
        residual: bool = False, norm: str = "none", weight_decay_scope: str = "all") -> GNN:
    r"""Graph convolutional network (Kipf & Welling, 2017): ``H' = D^-1/2 (A+I) D^-1/2 H W``.

    Node-wise, each node averages its neighbours and itself, weighted by degree:

    .. math::
        \mathbf{h}_i' = \mathbf{W}^\top \sum_{j \in \mathcal{N}(i) \cup \{i\}}
        \frac{1}{\sqrt{\hat{d}_j \hat{d}_i}} \mathbf{h}_j + \mathbf{b}, \qquad \hat{d}_i = 1 + \deg(i)

    The normalised adjacency is computed once by the data (a sparse CSR matrix), so each layer is
    one ``H W`` (sparse when the features are) and one sparse-dense product (:class:`GCNLayer`, the
    operator of ``GCNConv(normalize=False)``).
    Kipf & Welling put the 5e-4 weight decay on the first layer only: ``weight_decay_scope="first"``
    does the same (the default ``all`` applies ``optim.weight_decay`` to every parameter, as the plain
    PyG loop of the anchor does).

    Shapes: x (N, F), edge_index (2, E), adjacency (N, N) -> logits (N, C).
    """
    def conv(i: int, o: int, last: bool) -> nn.Module:
        return GCNLayer(i, o)

    return GNN(conv, _sizes(in_features, num_classes, hidden_size, depth), dropout, residual, norm,
               uses_adjacency=True, weight_decay_scope=weight_decay_scope)


@MODELS.register("sage")
def sage(*, in_features: int, num_classes: int, hidden_size: int = 64, depth: int = 2, dropout: float = 0.5,
         residual: bool = False, norm: str = "none", aggr: str = "mean") -> GNN:
    r"""GraphSAGE (Hamilton et al., 2017): ``h_i' = W_1 h_i + W_2 mean_{j in N(i)} h_j``.

    .. math::
        \mathbf{h}_i' = \mathbf{W}_1 \mathbf{h}_i + \mathbf{W}_2 \cdot
        \mathrm{aggr}_{j \in \mathcal{N}(i)} \mathbf{h}_j \quad (\mathrm{aggr} = \texttt{mean}, \texttt{max}, \texttt{sum})

    The node's own state is kept apart from its neighbours' (no self-loop), which lets the layer
    tell a node from its neighbourhood. Shapes: x (N, F), edge_index (2, E) -> logits (N, C).
    """
    from torch_geometric.nn import SAGEConv

    def conv(i: int, o: int, last: bool) -> nn.Module:
        return SAGEConv(i, o, aggr=aggr)

    return GNN(conv, _sizes(in_features, num_classes, hidden_size, depth), dropout, residual, norm)


@MODELS.register("gat")
def gat(*, in_features: int, num_classes: int, hidden_size: int = 8, heads: int = 8, output_heads: int = 1,
        depth: int = 2, dropout: float = 0.6, attention_dropout: float = 0.6, residual: bool = False,
        norm: str = "none") -> GNN:
    r"""Graph attention network (Velickovic et al., 2018): neighbours weighted by learned attention.

    .. math::
        \alpha_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i) \cup \{i\}}
        \left(\mathrm{LeakyReLU}_{0.2}\left(\mathbf{a}^\top [\mathbf{W}\mathbf{h}_i \,\|\, \mathbf{W}\mathbf{h}_j]\right)\right),
        \qquad \mathbf{h}_i' = \big\Vert_{k=1}^{K} \sum_j \alpha_{ij}^{k} \mathbf{W}^{k} \mathbf{h}_j

    Hidden layers concatenate ``heads`` heads of ``hidden_size`` features (8 x 8 on Cora) and use
    ELU; the output layer averages ``output_heads`` heads (1 on Cora, 8 on PubMed). Dropout
    (0.6) applies to every layer's input and to the attention coefficients.
    Shapes: x (N, F), edge_index (2, E) -> logits (N, C).
    """
    from torch_geometric.nn import GATConv

    def conv(i: int, o: int, last: bool) -> nn.Module:
        if last:
            return GATConv(i, o, heads=output_heads, concat=False, dropout=attention_dropout)
        return GATConv(i, hidden_size, heads=heads, dropout=attention_dropout)  # (N, heads * hidden_size)

    return GNN(conv, _sizes(in_features, num_classes, hidden_size * heads, depth), dropout, residual, norm,
               activation="elu")


@MODELS.register("gin")
def gin(*, in_features: int, num_classes: int, hidden_size: int = 64, depth: int = 2, dropout: float = 0.5,
        residual: bool = False, norm: str = "none", train_eps: bool = True) -> GNN:
    r"""Graph isomorphism network (Xu et al., 2019): an MLP of the node plus the sum of its neighbours.

    .. math::
        \mathbf{h}_i' = \mathrm{MLP}\left((1 + \epsilon) \mathbf{h}_i + \sum_{j \in \mathcal{N}(i)} \mathbf{h}_j\right)

    Sum aggregation with an injective MLP makes it as discriminative as the 1-WL test;
    ``epsilon`` is learned when ``train_eps``. The MLP is ``Linear -> ReLU -> Linear``.
    Shapes: x (N, F), edge_index (2, E) -> logits (N, C).
    """
    from torch_geometric.nn import GINConv

    def conv(i: int, o: int, last: bool) -> nn.Module:
        return GINConv(nn.Sequential(nn.Linear(i, hidden_size), nn.ReLU(), nn.Linear(hidden_size, o)),
                       train_eps=train_eps)

    return GNN(conv, _sizes(in_features, num_classes, hidden_size, depth), dropout, residual, norm)
