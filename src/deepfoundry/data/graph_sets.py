"""Sets of small graphs for graph classification: an offline synthetic set, TU data sets, batching.

A :class:`GraphSet` holds ``G`` graphs concatenated, the layout of ``torch_geometric.data.Batch``::

    x           (sum N_g, F)  node features of every graph, graph after graph
    edge_index  (2, sum E_g)  both directions of every edge, node ids local to their graph
    node_ptr    (G + 1,)      graph g owns nodes node_ptr[g] : node_ptr[g + 1]
    edge_ptr    (G + 1,)      and edges edge_ptr[g] : edge_ptr[g + 1]
    y           (G,)          one class per graph

:meth:`GraphSet.batch` gathers any list of graphs into one disjoint-union graph with vectorised
indexing (no per-graph Python loop): node ids are shifted by the number of nodes before each graph,
and ``batch`` (sum N, ) says which graph each node belongs to, which the pooling layers read.
:class:`GraphSetLoader` follows :class:`~deepfoundry.data.core.ArrayLoader`'s protocol (shuffled
per epoch from ``(seed, epoch)``, exact replay with ``skip``).

Data sets: ``synthetic-graphs`` (offline; four families of random graphs whose node features are a
constant and noise, so only the structure tells the class) and ``tu`` (the TU Dortmund collection,
MUTAG, PROTEINS, ..., read from the plain-text TU format; ``data.download=true`` fetches the zip).
Nothing is unpickled: torch_geometric's ``TUDataset`` would cache its processing with
``torch.save``; the text files are parsed here with numpy instead.

>>> from deepfoundry.registry import DATASETS
>>> data = DATASETS.build("synthetic-graphs", {"num_graphs": 40})
>>> batch = next(iter(data.train))
>>> sorted(batch)
['batch', 'edge_index', 'num_graphs', 'x', 'y']
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..nn.graph import clean_edges
from ..registry import DATASETS
from ..splits import stratified_split_of_all
from .core import DataBundle, Shardable
from .graphs import DEFAULT_DATA_HOME

TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets"
SYNTHETIC_FAMILIES = ("cycle", "tree", "grid", "cliques")


def segment_positions(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated ``arange(starts[i], starts[i] + lengths[i])`` for every i, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    shift = starts - (torch.cumsum(lengths, 0) - lengths)  # (K,)
    return torch.repeat_interleave(shift, lengths) + torch.arange(total)


@dataclass
class GraphSet:
    """``G`` small graphs, concatenated (see the module docstring for the layout)."""

    x: torch.Tensor
    edge_index: torch.Tensor
    node_ptr: torch.Tensor
    edge_ptr: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def from_graphs(cls, graphs: list[tuple[torch.Tensor, torch.Tensor]], y: torch.Tensor | np.ndarray | None = None,
                    source: str = "graph set") -> "GraphSet":
        """``graphs`` is a list of ``(x (N_g, F), edge_index (2, E_g))``; edges are checked and made
        undirected. ``y`` (G,) are the classes (zeros when None, for graphs to predict)."""
        if not graphs:
            raise DeepfoundryError(f"{source}: no graphs")
        xs, edges = [], []
        for g, (x, ei) in enumerate(graphs):
            x = torch.as_tensor(x).float()
            if x.dim() != 2 or x.shape[0] == 0:
                raise DeepfoundryError(f"{source}: graph {g} needs node features of shape (N, F) with N >= 1, "
                                       f"received {tuple(x.shape)}")
            xs.append(x)
            edges.append(clean_edges(ei, x.shape[0], source=f"{source}, graph {g}"))
        widths = {x.shape[1] for x in xs}
        if len(widths) != 1:
            raise DeepfoundryError(f"{source}: graphs have different numbers of node features: {sorted(widths)}")
        n = torch.tensor([0] + [x.shape[0] for x in xs])
        e = torch.tensor([0] + [ei.shape[1] for ei in edges])
        y = torch.zeros(len(graphs), dtype=torch.long) if y is None else torch.as_tensor(y).long()
        if len(y) != len(graphs):
            raise DeepfoundryError(f"{source}: {len(graphs)} graphs but {len(y)} labels")
        return cls(torch.cat(xs), torch.cat(edges, dim=1), torch.cumsum(n, 0), torch.cumsum(e, 0), y)

    def num_nodes(self) -> torch.Tensor:
        return self.node_ptr[1:] - self.node_ptr[:-1]  # (G,)

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor | int]:
        """The graphs ``index`` (B,) as one disjoint union: ``x`` (sum N, F), ``edge_index`` (2, sum E),
        ``batch`` (sum N,) graph of each node in 0..B-1, ``y`` (B,), ``num_graphs`` B."""
        index = torch.as_tensor(index).long()
        n = self.node_ptr[index + 1] - self.node_ptr[index]  # (B,)
        e = self.edge_ptr[index + 1] - self.edge_ptr[index]  # (B,)
        nodes = segment_positions(self.node_ptr[index], n)
        edges = segment_positions(self.edge_ptr[index], e)
        offset = torch.cumsum(n, 0) - n  # first node of each graph in the batch
        edge_index = self.edge_index[:, edges] + torch.repeat_interleave(offset, e)
        return {"x": self.x[nodes], "edge_index": edge_index,
                "batch": torch.repeat_interleave(torch.arange(len(index)), n), "y": self.y[index],
                "num_graphs": len(index)}

    def graph(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (N_g, F), edge_index (2, E_g))`` of graph ``g``, node ids local."""
        a, b = int(self.node_ptr[g]), int(self.node_ptr[g + 1])
        return self.x[a:b], self.edge_index[:, int(self.edge_ptr[g]):int(self.edge_ptr[g + 1])]


class GraphSetLoader(Shardable):
    """Mini-batches of whole graphs from a :class:`GraphSet`, following ArrayLoader's protocol.

    ``index`` are the graphs of this split. With ``shuffle`` the order of epoch ``e`` comes from a
    generator seeded with ``(seed, e)``, so ``epoch_batches(e, skip=k)`` replays an interrupted epoch.
    """

    def __init__(self, graphs: GraphSet, index: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0) -> None:
        self.graphs, self.index = graphs, torch.as_tensor(index).long()
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor | int]]:
        index = self.index
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            index = index[torch.randperm(len(index), generator=gen)]
        bs = self.batch_size
        for i in range(skip, len(self)):
            a, b = (i * bs, (i + 1) * bs) if self.world == 1 else self._part(i * bs, min((i + 1) * bs, len(index)))
            yield self.graphs.batch(index[a:b])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | int]]:
        return self.epoch_batches(self.epoch)


def graph_set_bundle(graphs: GraphSet, class_names: list[str], split: tuple[np.ndarray, ...], batch_size: int,
                     eval_batch_size: int, seed: int, note: str) -> DataBundle:
    """Loaders over the ``(train, val, test)`` graph indices of ``split`` and the facts models need."""
    tr, va, te = (torch.as_tensor(s, dtype=torch.long) for s in split)
    if len(tr) == 0:
        raise DeepfoundryError("graph set: the training split is empty")
    n = graphs.num_nodes().float()
    info = {"task_type": "classification", "input_kind": "graph_set", "num_classes": len(class_names),
            "class_names": list(class_names), "in_features": graphs.x.shape[1], "num_graphs": len(graphs),
            "mean_nodes": float(n.mean()), "mean_edges": float(graphs.edge_index.shape[1] / 2 / len(graphs)),
            "preprocess": None, "split_note": note, "num_train": len(tr), "num_val": len(va), "num_test": len(te)}
    return DataBundle(train=GraphSetLoader(graphs, tr, batch_size, shuffle=True, seed=seed),
                      val=GraphSetLoader(graphs, va, eval_batch_size), test=GraphSetLoader(graphs, te, eval_batch_size),
                      info=info)


# ----------------------------------------------------------------------------- synthetic graphs

def _family_edges(family: str, n: int, rng: np.random.Generator) -> tuple[int, list[tuple[int, int]]]:
    """``(num_nodes, edges)`` of one random graph of ``family`` with about ``n`` nodes."""
    if family == "cycle":  # a ring with a few random chords
        edges = [(i, (i + 1) % n) for i in range(n)]
        edges += [tuple(rng.choice(n, 2, replace=False)) for _ in range(max(1, n // 8))]
        return n, edges
    if family == "tree":  # a random recursive tree: node i hangs under a random earlier node
        return n, [(i, int(rng.integers(0, i))) for i in range(1, n)]
    if family == "grid":  # a rows x cols lattice
        rows = int(rng.integers(3, 6))
        cols = max(3, round(n / rows))
        edges = [(r * cols + c, r * cols + c + 1) for r in range(rows) for c in range(cols - 1)]
        edges += [(r * cols + c, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols)]
        return rows * cols, edges
    if family == "cliques":  # cliques of 3-5 nodes, chained by single edges (a "caveman" graph)
        sizes: list[int] = []
        while sum(sizes) < n:
            sizes.append(int(rng.integers(3, 6)))
        edges, start = [], 0
        for k, s in enumerate(sizes):
            edges += [(start + i, start + j) for i in range(s) for j in range(i + 1, s)]
            if k:
                edges.append((start - 1, start))
            start += s
        return start, edges
    raise DeepfoundryError(f"unknown graph family {family!r}; choose from {', '.join(SYNTHETIC_FAMILIES)}")


def _rewire(edges: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Replace ``round(noise * E)`` random edges by as many random node pairs (same edge count)."""
    k = int(round(noise * len(edges)))
    if k == 0:
        return edges
    keep = np.delete(edges, rng.choice(len(edges), k, replace=False), axis=0)
    return np.concatenate([keep, rng.integers(0, n, size=(k, 2))])


@lru_cache(maxsize=4)  # a run, its evaluation and its report rebuild the same graphs: generate them once
def synthetic_graph_set(num_graphs: int = 1200, min_nodes: int = 12, max_nodes: int = 30, feature_dim: int = 8,
                        noise: float = 0.1, seed: int = 0) -> GraphSet:
    """``num_graphs`` random graphs, equally many of each family in :data:`SYNTHETIC_FAMILIES`.

    Every graph draws its size uniformly from ``[min_nodes, max_nodes]`` (a grid or chain of cliques
    rounds it to fit), then ``noise`` of its edges are rewired at random, and its nodes are shuffled.
    Node features are ``[1, z_1 .. z_{F-1}]`` with ``z ~ N(0, 1)`` drawn independently of the class:
    the constant lets message passing count neighbours, the noise carries no information. A model
    that ignores the edges therefore sees the same feature distribution for every class (chance level
    with mean pooling); the class is only in the structure (degrees, cycles, leaves, triangles).
    """
    if num_graphs < len(SYNTHETIC_FAMILIES):
        raise DeepfoundryError(f"data.num_graphs must be >= {len(SYNTHETIC_FAMILIES)}, received {num_graphs}")
    if not 3 <= min_nodes <= max_nodes:
        raise DeepfoundryError(f"need 3 <= data.min_nodes <= data.max_nodes, received {min_nodes} and {max_nodes}")
    if feature_dim < 1 or not 0.0 <= noise < 1.0:
        raise DeepfoundryError(f"need data.feature_dim >= 1 and 0 <= data.noise < 1, received {feature_dim}, {noise}")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_graphs) % len(SYNTHETIC_FAMILIES)
    rng.shuffle(labels)
    graphs = []
    for label in labels:
        n, edges = _family_edges(SYNTHETIC_FAMILIES[label], int(rng.integers(min_nodes, max_nodes + 1)), rng)
        edges = _rewire(np.asarray(edges, dtype=np.int64), n, noise, rng)
        perm = rng.permutation(n)
        x = np.concatenate([np.ones((n, 1)), rng.standard_normal((n, feature_dim - 1))], axis=1)
        graphs.append((torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(perm[edges].T.copy())))
    return GraphSet.from_graphs(graphs, labels, source="synthetic-graphs")


@DATASETS.register("synthetic-graphs")
def synthetic_graphs(*, num_graphs: int = 1200, min_nodes: int = 12, max_nodes: int = 30, feature_dim: int = 8,
                     noise: float = 0.1, graph_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                     seed: int = 0, batch_size: int = 64, eval_batch_size: int = 1024) -> DataBundle:
    """Synthetic graph classification (offline): cycles vs trees vs grids vs chained cliques, class only in the structure."""
    graphs = synthetic_graph_set(num_graphs, min_nodes, max_nodes, feature_dim, noise, graph_seed)
    split = stratified_split_of_all(graphs.y.numpy(), val_fraction, test_fraction, seed)
    note = (f"{len(graphs):,} synthetic graphs ({', '.join(SYNTHETIC_FAMILIES)}; {min_nodes}-{max_nodes} nodes, "
            f"{noise:.0%} of edges rewired; features: a constant and noise): "
            f"{len(split[0])} train / {len(split[1])} val / {len(split[2])} test graphs, stratified")
    return graph_set_bundle(graphs, list(SYNTHETIC_FAMILIES), split, batch_size, eval_batch_size, seed, note)


# ----------------------------------------------------------------------------- TU data sets

def _read_ints(path: Path, columns: int | None = None) -> np.ndarray:
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DeepfoundryError(f"'{path}' should hold comma-separated integers: {exc}") from None
    if columns is not None and arr.size and arr.shape[1] != columns:
        raise DeepfoundryError(f"'{path}' should have {columns} column(s) per line, found {arr.shape[1]}")
    return arr


def read_tu(folder: str | Path, name: str, use_node_attributes: bool = False) -> tuple[GraphSet, list[str]]:
    """Read a data set in the TU format (``NAME_A.txt`` edges ``i, j`` with 1-based node ids,
    ``NAME_graph_indicator.txt`` the graph of each node, ``NAME_graph_labels.txt``, optional
    ``NAME_node_labels.txt`` (one-hot encoded) and ``NAME_node_attributes.txt``). Graphs without
    node labels or attributes get one constant feature. Returns the graphs and the class names."""
    folder = Path(folder)
    p = lambda suffix: folder / f"{name}_{suffix}.txt"  # noqa: E731
    edges = _read_ints(p("A"), 2) - 1  # (E, 2), 0-based
    indicator = _read_ints(p("graph_indicator"), 1)[:, 0] - 1  # (N,)
    labels_raw = _read_ints(p("graph_labels"), 1)[:, 0]  # (G,)
    n, g = len(indicator), len(labels_raw)
    if n == 0 or (np.diff(indicator) < 0).any() or indicator.min() != 0 or indicator.max() != g - 1:
        raise DeepfoundryError(f"'{p('graph_indicator')}' should number the graphs 1..{g} in order, one line per node")
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        line = int(np.argmax((edges < 0).any(axis=1) | (edges >= n).any(axis=1))) + 1
        raise DeepfoundryError(f"'{p('A')}' line {line}: node id {edges[line - 1].max() + 1} is out of range "
                               f"(the graph indicator lists {n} nodes)")
    if edges.size and (indicator[edges[:, 0]] != indicator[edges[:, 1]]).any():
        raise DeepfoundryError(f"'{p('A')}': an edge joins nodes of two different graphs")
    features = []
    if use_node_attributes and p("node_attributes").is_file():
        features.append(np.loadtxt(p("node_attributes"), delimiter=",", dtype=np.float32, ndmin=2))
    if p("node_labels").is_file():
        node_labels = _read_ints(p("node_labels"))[:, 0]
        values, codes = np.unique(node_labels, return_inverse=True)
        features.append(np.eye(len(values), dtype=np.float32)[codes])
    x = np.concatenate(features, axis=1) if features else np.ones((n, 1), dtype=np.float32)
    if len(x) != n:
        raise DeepfoundryError(f"{name}: node files have {len(x)} rows, the graph indicator {n}")
    classes, y = np.unique(labels_raw, return_inverse=True)
    node_ptr = np.concatenate([[0], np.cumsum(np.bincount(indicator, minlength=g))])
    graphs = []
    for k in range(g):
        a, b = node_ptr[k], node_ptr[k + 1]
        mine = edges[(edges[:, 0] >= a) & (edges[:, 0] < b)] - a
        graphs.append((torch.as_tensor(x[a:b]), torch.as_tensor(mine.T.copy())))
    return GraphSet.from_graphs(graphs, y, source=name), [str(c) for c in classes]


def write_tu(graphs: GraphSet, folder: str | Path, name: str) -> Path:
    """Write ``graphs`` in the TU format (``NAME_A``, ``graph_indicator``, ``graph_labels``,
    ``node_attributes`` text files) so other tools, and :func:`read_tu`, can read them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = graphs.num_nodes()
    indicator = torch.repeat_interleave(torch.arange(len(graphs)), n)
    offset = torch.repeat_interleave(graphs.node_ptr[:-1], graphs.edge_ptr[1:] - graphs.edge_ptr[:-1])
    edges = (graphs.edge_index + offset).T + 1
    np.savetxt(folder / f"{name}_A.txt", edges.numpy(), fmt="%d", delimiter=", ")
    np.savetxt(folder / f"{name}_graph_indicator.txt", indicator.numpy() + 1, fmt="%d")
    np.savetxt(folder / f"{name}_graph_labels.txt", graphs.y.numpy(), fmt="%d")
    np.savetxt(folder / f"{name}_node_attributes.txt", graphs.x.numpy(), fmt="%.6g", delimiter=", ")
    return folder


@DATASETS.register("tu")
def tu(*, dataset: str = "MUTAG", root: str | None = None, download: bool = False, use_node_attributes: bool = False,
       val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0, batch_size: int = 64,
       eval_batch_size: int = 1024) -> DataBundle:
    """TU graph classification sets (MUTAG, PROTEINS, ...) from the TU text format; data.download=true fetches them."""
    folder = Path(root).expanduser() if root else DEFAULT_DATA_HOME.expanduser() / "tu"
    candidates = (folder, folder / dataset, folder / dataset / "raw")
    found = next((f for f in candidates if (f / f"{dataset}_A.txt").is_file()), None)
    if found is None and download:
        from torch_geometric.data import download_url, extract_zip

        path = download_url(f"{TU_URL}/{dataset}.zip", str(folder), log=False)
        extract_zip(path, str(folder), log=False)
        found = next((f for f in candidates if (f / f"{dataset}_A.txt").is_file()), None)
    if found is None:
        raise DeepfoundryError(f"dataset 'tu': no {dataset}_A.txt (TU format) in '{folder}' or its {dataset}/ "
                               "folder; point data.root at one, or set data.download=true to fetch it")
    graphs, classes = read_tu(found, dataset, use_node_attributes)
    split = stratified_split_of_all(graphs.y.numpy(), val_fraction, test_fraction, seed)
    note = (f"{dataset}: {len(graphs):,} graphs, {len(split[0])} train / {len(split[1])} val / "
            f"{len(split[2])} test, stratified (seed {seed})")
    return graph_set_bundle(graphs, classes, split, batch_size, eval_batch_size, seed, note)
