"""Graph-level models: message passing over every node of a batch of graphs, then one readout per graph.

A batch of ``B`` graphs is one disjoint-union graph (:meth:`deepfoundry.data.graph_sets.GraphSet.batch`):
``x`` (N, F) with N the nodes of all graphs, ``edge_index`` (2, E), ``batch`` (N,) the graph of every
node. A :class:`GraphClassifier` computes::

    h^0 = x
    h^l = act(norm(conv_l(h^{l-1}, edge_index))) [+ skip(h^{l-1})]      l = 1..depth   # (N, H)
    r   = pool(h^depth, batch)            readout="last"                                # (B, H)
        | [pool(h^1, batch) || ... || pool(h^depth, batch)]   readout="all"             # (B, depth * H)
    logits = W_2 dropout(relu(W_1 r))                                                   # (B, C)

with ``pool`` one of ``mean`` (1/N_g sum_i h_i), ``max`` (element-wise max) or ``add`` (sum_i h_i,
which keeps the graph's size; GIN's choice). ``readout="all"`` is the readout of Xu et al. (2019),
which scores every depth's subtree patterns. ``mlp_graph`` is the same network with each
message-passing layer replaced by a per-node linear layer: a structure-blind baseline (DeepSets).

>>> import torch
>>> from deepfoundry.models import build_model
>>> model = build_model("gin_graph", {}, {"in_features": 3, "num_classes": 2})
>>> model(torch.randn(5, 3), torch.tensor([[0, 1, 3], [1, 2, 4]]), torch.tensor([0, 0, 0, 1, 1])).shape
torch.Size([2, 2])
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepfoundryError
from ..registry import MODELS
from .gnn import NORMS, _norm

POOLS = ("mean", "max", "add")
READOUTS = ("last", "all")


def global_pool(h: torch.Tensor, batch: torch.Tensor, num_graphs: int, kind: str) -> torch.Tensor:
    """(N, H) node states -> (B, H) one vector per graph: torch_geometric's global_{mean,max,add}_pool."""
    from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

    fn = {"mean": global_mean_pool, "max": global_max_pool, "add": global_add_pool}[kind]
    return fn(h, batch, size=num_graphs)


class NodeLinear(nn.Module):
    """``h_i' = W h_i + b``: a per-node layer that ignores the edges (the structure-blind baseline)."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_size, out_size)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class GraphClassifier(nn.Module):
    """``depth`` message-passing layers of width ``hidden_size``, a pooled readout per graph and an MLP head.

    Args:
        conv: ``conv(in_size, out_size) -> layer`` with ``layer(h, edge_index) -> h'``.
        in_features, num_classes, hidden_size, depth: widths and number of layers.
        dropout: dropout before the head's last linear layer.
        residual: add ``h^{l-1}`` (projected when the widths differ) to every layer's output.
        norm: ``none``, ``batch`` (BatchNorm1d over the batch's nodes) or ``layer``.
        pooling: ``mean``, ``max`` or ``add``; readout: ``last`` or ``all`` (see the module docstring).

    ``features(x, edge_index, batch, num_graphs)`` is the readout (B, R) and ``head(r)`` the logits,
    like every classifier here; ``node_embeddings(x, edge_index)`` the last layer's node states.
    """

    def __init__(self, conv: Callable[[int, int], nn.Module], in_features: int, num_classes: int, hidden_size: int,
                 depth: int, dropout: float, residual: bool, norm: str, pooling: str, readout: str) -> None:
        super().__init__()
        if depth < 1:
            raise DeepfoundryError(f"model.depth must be >= 1, received {depth}")
        if norm not in NORMS:
            raise DeepfoundryError(f"model.norm must be one of {', '.join(NORMS)}, received {norm!r}")
        if pooling == "sum":
            pooling = "add"
        if pooling not in POOLS:
            raise DeepfoundryError(f"model.pooling must be one of {', '.join(POOLS)}, received {pooling!r}")
        if readout not in READOUTS:
            raise DeepfoundryError(f"model.readout must be one of {', '.join(READOUTS)}, received {readout!r}")
        if not 0.0 <= dropout < 1.0:
            raise DeepfoundryError(f"model.dropout must be in [0, 1), received {dropout}")
        sizes = [in_features] + [hidden_size] * depth
        self.convs = nn.ModuleList(conv(sizes[i], sizes[i + 1]) for i in range(depth))
        self.norms = nn.ModuleList(_norm(norm, hidden_size) for _ in range(depth))
        self.skips = nn.ModuleList(
            (nn.Identity() if sizes[i] == hidden_size else nn.Linear(sizes[i], hidden_size, bias=False))
            for i in range(depth)) if residual else None
        width = hidden_size * (depth if readout == "all" else 1)
        self.head = nn.Sequential(nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden_size, num_classes))
        self.pooling, self.readout = pooling, readout

    def _layers(self, x: torch.Tensor, edge_index: torch.Tensor) -> list[torch.Tensor]:
        states = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = F.relu(norm(conv(x, edge_index)))  # (N, H)
            if self.skips is not None:
                h = h + self.skips[i](x)
            states.append(h)
            x = h
        return states

    def node_embeddings(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """(N, H): every node's state after the last message-passing layer."""
        return self._layers(x, edge_index)[-1]

    def features(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None,
                 num_graphs: int | None = None) -> torch.Tensor:
        """(B, R): the pooled readout of every graph (one graph when ``batch`` is None)."""
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        states = self._layers(x, edge_index)
        if self.readout == "last":
            states = states[-1:]
        return torch.cat([global_pool(h, batch, num_graphs, self.pooling) for h in states], dim=1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None,
                num_graphs: int | None = None) -> torch.Tensor:
        return self.head(self.features(x, edge_index, batch, num_graphs))  # (B, C)


@MODELS.register("gin_graph")
def gin_graph(*, in_features: int, num_classes: int, hidden_size: int = 64, depth: int = 3, dropout: float = 0.5,
              residual: bool = False, norm: str = "batch", pooling: str = "add", readout: str = "all",
              train_eps: bool = True) -> GraphClassifier:
    r"""GIN for graph classification (Xu et al., 2019): sum aggregation, sum pooling of every layer.

    .. math::
        \mathbf{h}_i^{l} = \mathrm{MLP}^{l}\left((1 + \epsilon^{l}) \mathbf{h}_i^{l-1}
        + \sum_{j \in \mathcal{N}(i)} \mathbf{h}_j^{l-1}\right), \qquad
        \mathbf{r}_G = \big\Vert_{l=1}^{L} \sum_{i \in G} \mathbf{h}_i^{l}

    Shapes: x (N, F), edge_index (2, E), batch (N,) -> logits (B, C).
    """
    from torch_geometric.nn import GINConv

    def conv(i: int, o: int) -> nn.Module:
        return GINConv(nn.Sequential(nn.Linear(i, o), nn.ReLU(), nn.Linear(o, o)), train_eps=train_eps)

    return GraphClassifier(conv, in_features, num_classes, hidden_size, depth, dropout, residual, norm, pooling,
                           readout)


@MODELS.register("gcn_graph")
def gcn_graph(*, in_features: int, num_classes: int, hidden_size: int = 64, depth: int = 3, dropout: float = 0.5,
              residual: bool = False, norm: str = "batch", pooling: str = "mean",
              readout: str = "last") -> GraphClassifier:
    r"""GCN layers with a pooled readout for graph classification: ``H' = D^-1/2 (A+I) D^-1/2 H W``.

    Each layer is ``torch_geometric.nn.GCNConv`` (normalisation computed per batch, self-loops
    added). Shapes: x (N, F), edge_index (2, E), batch (N,) -> logits (B, C).
    """
    from torch_geometric.nn import GCNConv

    return GraphClassifier(lambda i, o: GCNConv(i, o), in_features, num_classes, hidden_size, depth, dropout,
                           residual, norm, pooling, readout)


@MODELS.register("sage_graph")
def sage_graph(*, in_features: int, num_classes: int, hidden_size: int = 64, depth: int = 3, dropout: float = 0.5,
               residual: bool = False, norm: str = "batch", pooling: str = "mean", readout: str = "last",
               aggr: str = "mean") -> GraphClassifier:
    r"""GraphSAGE layers with a pooled readout: ``h_i' = W_1 h_i + W_2 aggr_{j in N(i)} h_j``.

    Shapes: x (N, F), edge_index (2, E), batch (N,) -> logits (B, C).
    """
    from torch_geometric.nn import SAGEConv

    return GraphClassifier(lambda i, o: SAGEConv(i, o, aggr=aggr), in_features, num_classes, hidden_size, depth,
                           dropout, residual, norm, pooling, readout)


@MODELS.register("mlp_graph")
def mlp_graph(*, in_features: int, num_classes: int, hidden_size: int = 64, depth: int = 3, dropout: float = 0.5,
              residual: bool = False, norm: str = "batch", pooling: str = "mean",
              readout: str = "last") -> GraphClassifier:
    r"""Structure-blind baseline: a per-node MLP, then pooling (DeepSets); it never reads the edges.

    .. math::
        \mathbf{h}_i^{l} = \mathrm{ReLU}(\mathbf{W}^{l} \mathbf{h}_i^{l-1} + \mathbf{b}^{l}), \qquad
        \mathbf{r}_G = \mathrm{pool}_{i \in G}\, \mathbf{h}_i^{L}

    With ``pooling=mean`` it sees the mean of a function of the node features, nothing of the graph.
    Shapes: x (N, F), edge_index (2, E) (ignored), batch (N,) -> logits (B, C).
    """
    return GraphClassifier(NodeLinear, in_features, num_classes, hidden_size, depth, dropout, residual, norm,
                           pooling, readout)
