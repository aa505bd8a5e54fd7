"""Neighbour-sampled mini-batches for node classification on graphs too large for full-batch training.

GraphSAGE-style sampling (Hamilton et al., 2017), what ``torch_geometric.loader.NeighborLoader`` does
(it needs pyg-lib or torch-sparse, which this install may lack; this sampler is plain torch): for a
batch of seed nodes, hop ``k`` draws up to ``num_neighbors[k]`` neighbours of every node reached at
hop ``k - 1`` without replacement (``-1``: all of them), and keeps the sampled edges
``neighbour -> node``. A model of depth ``L = len(num_neighbors)`` run on this subgraph computes the
seeds' outputs from at most ``prod(num_neighbors)`` nodes each, whatever the size of the graph.

Sampling is vectorised: every candidate edge of the frontier gets a random key ``owner + u``,
``u ~ U[0, 1)``; sorting the keys groups the edges by frontier node in random order, and the first
``k`` of each group are kept. A batch is the dict the node task reads: ``x`` (M, F) of the
subgraph's nodes (seeds first), ``edge_index`` (2, E_s) in local ids, ``adjacency`` the GCN matrix
of the sampled subgraph, ``y`` (M,), and ``mask`` (M,) marking the seeds, where the loss is taken.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Iterator

import torch

from ..errors import DeepfoundryError
from .core import Shardable
from .graph_sets import segment_positions

if TYPE_CHECKING:
    from .graphs import Graph


def check_num_neighbors(num_neighbors: list[int] | None) -> list[int]:
    if not num_neighbors or not all(isinstance(k, int) and (k > 0 or k == -1) for k in num_neighbors):
        raise DeepfoundryError(f"data.num_neighbors must be a list of positive fan-outs per hop (or -1 for all "
                               f"neighbours), e.g. [10, 5]; received {num_neighbors!r}")
    return list(num_neighbors)


class NeighborSampler:
    """Samples the ``len(num_neighbors)``-hop computation subgraph of a set of seed nodes.

    ``edge_index`` (2, E) must hold both directions of every edge, sorted by its first row (what
    :func:`~deepfoundry.data.graphs.clean_edges` returns); it is kept as CSR (``rowptr``, ``col``).
    """

    def __init__(self, edge_index: torch.Tensor, num_nodes: int, num_neighbors: list[int]) -> None:
        self.num_nodes, self.num_neighbors = num_nodes, check_num_neighbors(num_neighbors)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        self.rowptr[1:] = torch.cumsum(torch.bincount(edge_index[0], minlength=num_nodes), 0)
        self.col = edge_index[1].contiguous()

    def sample(self, seeds: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n_id (M,), edge_index (2, E_s))``: the subgraph's global node ids, seeds first, and its
        sampled edges in local ids, ``edge_index[0]`` the neighbour (source), ``[1]`` the node it informs."""
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[seeds] = torch.arange(len(seeds))
        n_id, frontier, edges = [seeds], seeds, []
        count = len(seeds)
        for k in self.num_neighbors:
            starts = self.rowptr[frontier]
            degree = self.rowptr[frontier + 1] - starts  # (F,)
            pos = segment_positions(starts, degree)  # every candidate edge of the frontier
            owner = torch.repeat_interleave(torch.arange(len(frontier)), degree)
            if k >= 0 and len(pos):
                key = owner.double() + torch.rand(len(pos), generator=generator, dtype=torch.float64)
                order = torch.argsort(key)  # grouped by owner, random within a group
                rank = torch.arange(len(pos)) - torch.repeat_interleave(torch.cumsum(degree, 0) - degree, degree)
                order = order[rank < k]
                pos, owner = pos[order], owner[order]
            neighbour, target = self.col[pos], frontier[owner]
            new = torch.unique(neighbour[local[neighbour] < 0])
            local[new] = torch.arange(count, count + len(new))
            count += len(new)
            edges.append(torch.stack([local[neighbour], local[target]]))
            n_id.append(new)
            frontier = new
        return torch.cat(n_id), torch.cat(edges, dim=1)


def sampled_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """GCN propagation matrix of a directed sampled subgraph, ``A_hat[i, j] = 1 / sqrt(d_i d_j)`` for
    every edge ``j -> i`` and self-loop, ``d_i = 1 + in-degree(i)`` (``gcn_norm`` of PyG), sparse CSR."""
    loops = torch.arange(num_nodes)
    src = torch.cat([edge_index[0], loops])
    dst = torch.cat([edge_index[1], loops])
    inv_sqrt = torch.bincount(dst, minlength=num_nodes).float().pow(-0.5)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the operations used here are stable
        warnings.simplefilter("ignore", UserWarning)
        adj = torch.sparse_coo_tensor(torch.stack([dst, src]), inv_sqrt[dst] * inv_sqrt[src], (num_nodes, num_nodes))
        return adj.coalesce().to_sparse_csr()


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a dense or sparse CSR matrix (sparse stays sparse)."""
    if x.layout != torch.sparse_csr:
        return x[index]
    crow = x.crow_indices()
    starts, lengths = crow[index], crow[index + 1] - crow[index]
    pos = segment_positions(starts, lengths)
    new_crow = torch.zeros(len(index) + 1, dtype=crow.dtype)
    new_crow[1:] = torch.cumsum(lengths, 0)
    return torch.sparse_csr_tensor(new_crow, x.col_indices()[pos], x.values()[pos], (len(index), x.shape[1]),
                                   check_invariants=False)


class NeighborLoader(Shardable):
    """Mini-batches of ``batch_size`` seed nodes of one split with their sampled neighbourhoods,
    following ArrayLoader's protocol. The seeds' order of epoch ``e`` and the sampling of batch ``i``
    come from generators seeded with ``(seed, e, i)``, so ``epoch_batches(e, skip)`` replays an
    interrupted epoch exactly; loaders without ``shuffle`` (validation, test) sample the same
    subgraphs every time."""

    def __init__(self, graph: "Graph", mask: torch.Tensor, batch_size: int, num_neighbors: list[int], shuffle: bool = False,
                 seed: int = 0) -> None:
        self.graph, self.mask = graph, mask
        self.seeds = torch.nonzero(mask).flatten()
        self.sampler = NeighborSampler(graph.edge_index, graph.num_nodes, num_neighbors)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.seeds) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.seeds)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        seeds, base = self.seeds, self.seed * 1_000_003
        if not self.shuffle:
            epoch = 0
        else:
            seeds = seeds[torch.randperm(len(seeds), generator=torch.Generator().manual_seed(base + epoch))]
        bs, g = self.batch_size, self.graph
        for i in range(skip, len(self)):
            a, b = (i * bs, (i + 1) * bs) if self.world == 1 else self._part(i * bs, min((i + 1) * bs, len(seeds)))
            batch_seeds = seeds[a:b]  # under torchrun: this rank's seeds, each rank sampling their neighbourhoods
            gen = torch.Generator().manual_seed((base + epoch) * 100_003 + i + 1)
            n_id, edge_index = self.sampler.sample(batch_seeds, gen)
            mask = torch.zeros(len(n_id), dtype=torch.bool)
            mask[:len(batch_seeds)] = True
            yield {"x": gather_rows(g.x, n_id), "edge_index": edge_index,
                   "adjacency": sampled_adjacency(edge_index, len(n_id)), "y": g.y[n_id], "mask": mask}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.epoch_batches(self.epoch)
