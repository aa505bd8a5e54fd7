"""Graph operators the GNNs and the graph data sets share: a canonical edge list and the GCN
propagation matrix (Kipf & Welling, 2017)::

    adjacency = D^-1/2 (A + I) D^-1/2,   D_ii = 1 + sum_j A_ij

>>> edges = clean_edges(torch.tensor([[0, 1, 1], [1, 0, 2]]), 3)   # (2, E): both directions, no duplicates
>>> edges.tolist()
[[0, 1, 1, 2], [1, 0, 2, 1]]
>>> normalized_adjacency(edges, 3).to_dense()[0]
tensor([0.5000, 0.4082, 0.0000])
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import DeepfoundryError


def normalized_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as a sparse CSR tensor (N, N); ``edge_index`` (2, E) without self-loops."""
    loops = torch.arange(num_nodes)
    row = torch.cat([edge_index[0], loops])
    col = torch.cat([edge_index[1], loops])
    deg = torch.bincount(row, minlength=num_nodes).float()  # (N,), >= 1 thanks to the self-loop
    inv_sqrt = deg.pow(-0.5)
    value = inv_sqrt[row] * inv_sqrt[col]
    # indices are checked by clean_edges, so the invariant check is on here only because it is cheap
    adj = torch.sparse_coo_tensor(torch.stack([row, col]), value, (num_nodes, num_nodes),
                                  check_invariants=True).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the operations used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return adj.to_sparse_csr()


def clean_edges(edge_index: torch.Tensor | np.ndarray, num_nodes: int, source: str = "graph") -> torch.Tensor:
    """Check ``edge_index`` (2, E) and return it undirected, sorted, without duplicates or self-loops."""
    edge_index = torch.as_tensor(edge_index)
    if edge_index.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise DeepfoundryError(f"{source}: edge_index must have shape (2, E), received {tuple(edge_index.shape)}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise DeepfoundryError(f"{source}: edge_index must hold integer node ids, received {edge_index.dtype}")
    edge_index = edge_index.long()
    low, high = int(edge_index.min()), int(edge_index.max())
    if low < 0 or high >= num_nodes:
        bad = low if low < 0 else high
        raise DeepfoundryError(f"{source}: edge_index refers to node {bad}, but the graph has {num_nodes} nodes "
                               f"(valid ids 0..{num_nodes - 1})")
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    both = both[:, both[0] != both[1]]
    key = torch.unique(both[0] * num_nodes + both[1])  # sorted by (row, col)
    return torch.stack([key // num_nodes, key % num_nodes])


__all__ = ["clean_edges", "normalized_adjacency"]
