"""Graphs for node classification: Zachary's karate club (offline) and the Planetoid citation graphs.

A graph of ``N`` nodes is held once in memory as a :class:`Graph`: node features ``x`` (N, F), labels
``y`` (N,), ``edge_index`` (2, E) with both directions of every undirected edge, and the GCN
propagation matrix computed once (not per epoch), as a sparse CSR tensor::

    adjacency = D^-1/2 (A + I) D^-1/2,   D_ii = 1 + sum_j A_ij

Training is full-batch by default (Kipf & Welling, 2017): every loader yields one batch, the whole
graph with the boolean node ``mask`` of its split, so :class:`GraphLoader` has length 1 and
``num_samples`` is the number of nodes in the split. A batch is a ``dict`` of tensors, which the
Trainer moves to the device like any other batch. ``data.batching=neighbor`` trains on sampled
neighbourhoods of mini-batches of nodes instead (:mod:`deepfoundry.data.graph_sampling`). Sets of
small graphs (graph classification) are in :mod:`deepfoundry.data.graph_sets`, a user's own graph
from CSV files in :mod:`deepfoundry.data.graph_csv`.

Planetoid files (``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}``) are Python pickles of scipy
and numpy objects. Nothing here calls ``pickle.load``: :class:`RestrictedUnpickler` resolves only
the handful of numpy / scipy.sparse reconstruction globals these files use and refuses any other
(``os.system``, ``builtins.eval``, ...) with a :class:`~deepfoundry.errors.DeepfoundryError`.

>>> from deepfoundry.registry import DATASETS
>>> data = DATASETS.build("karate")
>>> data.info["num_nodes"], data.train.num_samples, data.test.num_samples
(34, 4, 30)
"""
from __future__ import annotations

import io
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..nn.graph import clean_edges, normalized_adjacency
from ..registry import DATASETS
from .core import DataBundle

DEFAULT_DATA_HOME = Path("~/.cache/deepfoundry/datasets")
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
PLANETOID_FILES = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
PLANETOID_CLASSES = {
    "cora": ["Case_Based", "Genetic_Algorithms", "Neural_Networks", "Probabilistic_Methods",
             "Reinforcement_Learning", "Rule_Learning", "Theory"],
    "citeseer": ["Agents", "AI", "DB", "IR", "ML", "HCI"],
    "pubmed": ["Diabetes_Experimental", "Diabetes_Type_1", "Diabetes_Type_2"],
}


# ----------------------------------------------------------------------------- safe unpickling

def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The exact globals that numpy arrays, scipy sparse matrices and the adjacency dict need."""
    import collections

    import scipy.sparse as sp

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "defaultdict"): collections.defaultdict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("builtins", "__builtin__"):  # protocol-2 pickles from Python 2 say __builtin__
        for name, obj in (("list", list), ("dict", dict), ("set", set), ("tuple", tuple),
                          ("int", int), ("float", float), ("object", object)):
            allowed[(module, name)] = obj
    for kind in ("csr", "csc", "coo", "lil", "dok"):
        cls = getattr(sp, f"{kind}_matrix")
        for module in (f"scipy.sparse.{kind}", f"scipy.sparse._{kind}", "scipy.sparse"):
            allowed[(module, f"{kind}_matrix")] = cls
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, scipy sparse matrices and plain containers, and nothing else.

    ``find_class`` is the only way a pickle reaches code; it answers from a fixed table of
    reconstruction globals and raises :class:`DeepfoundryError` for any other name.
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._ALLOWED is None:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise DeepfoundryError(
                f"refusing to unpickle global '{module}.{name}': only numpy arrays, scipy sparse matrices "
                "and plain containers are allowed in a data file") from None


def safe_unpickle(data: bytes, source: str = "data") -> Any:
    """``pickle.loads`` restricted to :class:`RestrictedUnpickler`'s globals (``encoding='latin1'``
    reads the Python 2 pickles of numpy arrays)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except DeepfoundryError as exc:
        raise DeepfoundryError(f"{source}: {exc}") from None
    except Exception as exc:  # truncated or garbled bytes
        raise DeepfoundryError(f"{source} is not a readable pickle of arrays: {type(exc).__name__}: {exc}") from None


# ----------------------------------------------------------------------------- the graph

@dataclass
class Graph:
    """One graph in memory: ``x`` (N, F) float (dense, or sparse CSR for bag-of-words features), ``y`` (N,) long, ``edge_index`` (2, E), ``adjacency``
    (N, N) sparse CSR, and boolean masks (N,) of the train / val / test nodes."""

    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    adjacency: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]


def make_graph(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, edge_index: torch.Tensor | np.ndarray,
               train_mask: torch.Tensor, val_mask: torch.Tensor, test_mask: torch.Tensor,
               row_normalize: bool = False, sparse_features: bool | None = None, source: str = "graph") -> Graph:
    """Validate the parts of a graph, clean its edges and compute the GCN propagation matrix once.

    ``row_normalize`` divides each node's features by their sum (``T.NormalizeFeatures`` in PyG, the
    preprocessing of Kipf & Welling); rows that sum to zero stay zero. ``sparse_features`` keeps
    ``x`` as a sparse CSR matrix (default: when under 5% of its entries are non-zero).
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    y = torch.as_tensor(y).long()
    if x.dim() != 2:
        raise DeepfoundryError(f"{source}: node features must have shape (N, F), received {tuple(x.shape)}")
    n = x.shape[0]
    if n == 0:
        raise DeepfoundryError(f"{source}: the graph has no nodes")
    for label, t in (("labels", y), ("train_mask", train_mask), ("val_mask", val_mask), ("test_mask", test_mask)):
        if t.shape[0] != n:
            raise DeepfoundryError(f"{source}: {label} has {t.shape[0]} rows but the feature matrix has {n} "
                                   "(one row per node is needed)")
    if not torch.isfinite(x).all():
        raise DeepfoundryError(f"{source}: node features contain NaN or infinite values")
    if row_normalize:
        x = x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)
    if int(train_mask.sum()) == 0:
        raise DeepfoundryError(f"{source}: no node is in the training split")
    edge_index = clean_edges(edge_index, n, source)
    if sparse_features is None:
        sparse_features = float((x != 0).float().mean()) < 0.05
    if sparse_features:  # bag-of-words features: 1.3% non-zero on Cora
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            x = x.to_sparse_csr()
    return Graph(x.contiguous() if not sparse_features else x, y, edge_index, normalized_adjacency(edge_index, n),
                 train_mask.bool(), val_mask.bool(), test_mask.bool())


class GraphLoader:
    """Full-batch loader over one graph, following :class:`~deepfoundry.data.core.ArrayLoader`'s
    protocol: one batch per epoch, a dict ``{x, edge_index, adjacency, y, mask}`` where ``mask`` (N,)
    marks this split's nodes."""

    def __init__(self, graph: Graph, mask: torch.Tensor) -> None:
        self.graph, self.mask = graph, mask
        self.epoch = 0

    def __len__(self) -> int:
        return 1

    @property
    def num_samples(self) -> int:
        return int(self.mask.sum())

    def batch(self) -> dict[str, torch.Tensor]:
        g = self.graph
        return {"x": g.x, "edge_index": g.edge_index, "adjacency": g.adjacency, "y": g.y, "mask": self.mask}

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        if skip < 1:
            yield self.batch()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.epoch_batches(self.epoch)


def graph_bundle(graph: Graph, class_names: list[str], split_note: str, batching: str = "full",
                 num_neighbors: list[int] | None = None, batch_size: int = 64, eval_batch_size: int = 1024,
                 seed: int = 0) -> DataBundle:
    """Wrap ``graph`` in train / val / test loaders and the ``info`` models need.

    ``batching="full"`` (default): one :class:`GraphLoader` batch per epoch, the whole graph.
    ``batching="neighbor"``: :class:`~deepfoundry.data.graph_sampling.NeighborLoader` mini-batches of
    ``batch_size`` seed nodes (``eval_batch_size`` for val / test) with ``num_neighbors`` sampled
    neighbours per hop, for graphs too large to propagate over at once.
    """
    info = {"task_type": "classification", "num_classes": len(class_names), "class_names": list(class_names),
            "in_features": graph.x.shape[1], "num_nodes": graph.num_nodes, "num_edges": graph.edge_index.shape[1],
            "input_kind": "graph", "preprocess": None, "split_note": split_note, "batching": batching,
            "num_train": int(graph.train_mask.sum()), "num_val": int(graph.val_mask.sum()),
            "num_test": int(graph.test_mask.sum())}
    if batching == "full":
        if num_neighbors is not None:
            raise DeepfoundryError("data.num_neighbors needs data.batching=neighbor (full-batch training uses "
                                   "every neighbour)")
        return DataBundle(train=GraphLoader(graph, graph.train_mask), val=GraphLoader(graph, graph.val_mask),
                          test=GraphLoader(graph, graph.test_mask), info=info)
    if batching != "neighbor":
        raise DeepfoundryError(f"data.batching must be 'full' or 'neighbor', received {batching!r}")
    from .graph_sampling import NeighborLoader, check_num_neighbors

    fanout = check_num_neighbors(num_neighbors if num_neighbors is not None else [10, 5])
    info["num_neighbors"] = fanout
    info["split_note"] = f"{split_note}; neighbour-sampled mini-batches of {batch_size} nodes, fan-outs {fanout}"
    return DataBundle(
        train=NeighborLoader(graph, graph.train_mask, batch_size, fanout, shuffle=True, seed=seed),
        val=NeighborLoader(graph, graph.val_mask, eval_batch_size, fanout, seed=seed),
        test=NeighborLoader(graph, graph.test_mask, eval_batch_size, fanout, seed=seed), info=info)


# ----------------------------------------------------------------------------- karate club

@DATASETS.register("karate")
def karate(*, batching: str = "full", num_neighbors: list[int] | None = None, batch_size: int = 64,
           eval_batch_size: int = 1024, seed: int = 0) -> DataBundle:
    """Zachary's karate club: 34 members, 78 friendships, 4 communities, 1 labelled member each (offline)."""
    from torch_geometric.datasets import KarateClub

    d = KarateClub()[0]
    train = d.train_mask.bool()
    graph = make_graph(d.x, d.y, d.edge_index, train, ~train, ~train, source="karate")
    note = "34 nodes: 4 labelled (one per community) train; the other 30 validate and test (transductive)"
    return graph_bundle(graph, [f"community {i}" for i in range(4)], note, batching, num_neighbors, batch_size,
                        eval_batch_size, seed)


# ----------------------------------------------------------------------------- Planetoid

def _locate_planetoid(name: str, root: Path) -> Path | None:
    pyg_name = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}[name]
    for folder in (root, root / name, root / pyg_name / "raw"):  # ours, or torch_geometric's layout
        if all((folder / f"ind.{name}.{f}").is_file() for f in PLANETOID_FILES):
            return folder
    return None


def _download_planetoid(name: str, folder: Path) -> None:
    from torch_geometric.data import download_url

    folder.mkdir(parents=True, exist_ok=True)
    for f in PLANETOID_FILES:  # raw files only: PyG's own processing would pickle.load them
        if not (folder / f"ind.{name}.{f}").is_file():
            download_url(f"{PLANETOID_URL}/ind.{name}.{f}", str(folder), log=False)


def _dense(obj: Any, path: Path) -> np.ndarray:
    arr = obj.toarray() if hasattr(obj, "toarray") else np.asarray(obj)
    if arr.ndim != 2:
        raise DeepfoundryError(f"'{path}' should hold a 2-D matrix, found shape {arr.shape}")
    return arr.astype(np.float32)


def read_planetoid(folder: str | Path, name: str) -> tuple[np.ndarray, ...]:
    """``(x (N, F), y (N,), edge_index (2, E), train_index, val_index, test_index)`` of the standard
    split of Yang et al. (2016) as Kipf & Welling and PyG build it: the first ``len(y)`` nodes train
    (140 on Cora), the next 500 validate, the 1,000 nodes of ``test.index`` test. CiteSeer's isolated
    test-range nodes that have no features get zero rows (and are in no split)."""
    folder = Path(folder)
    raw: dict[str, Any] = {}
    for f in PLANETOID_FILES:
        path = folder / f"ind.{name}.{f}"
        if f == "test.index":
            try:
                raw[f] = np.array([int(line) for line in path.read_text().split()], dtype=np.int64)
            except ValueError as exc:
                raise DeepfoundryError(f"'{path}' should hold one node id per line: {exc}") from None
        else:
            raw[f] = safe_unpickle(path.read_bytes(), source=f"'{path}'")
    x, tx, allx = (_dense(raw[k], folder / f"ind.{name}.{k}") for k in ("x", "tx", "allx"))
    y, ty, ally = (_dense(raw[k], folder / f"ind.{name}.{k}") for k in ("y", "ty", "ally"))
    test_index = raw["test.index"]
    sorted_test = np.sort(test_index)
    if name == "citeseer":  # isolated nodes leave gaps in the test range: pad them with zero rows
        span = int(test_index.max() - test_index.min()) + 1
        tx_ext = np.zeros((span, tx.shape[1]), dtype=np.float32)
        tx_ext[sorted_test - test_index.min()] = tx
        ty_ext = np.zeros((span, ty.shape[1]), dtype=np.float32)
        ty_ext[sorted_test - test_index.min()] = ty
        tx, ty = tx_ext, ty_ext
    features = np.concatenate([allx, tx])
    features[test_index] = features[sorted_test]
    labels = np.concatenate([ally, ty]).argmax(axis=1)
    labels[test_index] = labels[sorted_test]
    graph = raw["graph"]
    if not isinstance(graph, dict):
        raise DeepfoundryError(f"'{folder}/ind.{name}.graph' should hold a dict of adjacency lists")
    rows = [int(k) for k, vs in graph.items() for _ in vs]
    cols = [int(v) for vs in graph.values() for v in vs]
    edge_index = np.array([rows, cols], dtype=np.int64).reshape(2, -1)
    train_index = np.arange(len(y))
    val_index = np.arange(len(y), len(y) + 500)
    return features, labels, edge_index, train_index, val_index, sorted_test


def _mask(index: np.ndarray, n: int) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.as_tensor(index)] = True
    return mask


def _planetoid(name: str, root: str | None, download: bool, row_normalize: bool, **batching: Any) -> DataBundle:
    folder = Path(root).expanduser() if root else DEFAULT_DATA_HOME.expanduser() / name
    found = _locate_planetoid(name, folder)
    if found is None and download:
        _download_planetoid(name, folder)
        found = _locate_planetoid(name, folder)
    if found is None:
        raise DeepfoundryError(
            f"dataset {name!r}: no ind.{name}.{{{','.join(PLANETOID_FILES)}}} files in '{folder}'; point --data-root "
            "(data.root) at a folder holding them, or set data.download=true to fetch them")
    x, y, edge_index, tr, va, te = read_planetoid(found, name)
    n = len(y)
    graph = make_graph(x, y, edge_index, _mask(tr, n), _mask(va, n), _mask(te, n),
                       row_normalize=row_normalize, source=f"dataset {name!r}")
    note = (f"{n:,} nodes, {graph.edge_index.shape[1] // 2:,} undirected edges: the standard Planetoid split, "
            f"{len(tr)} train / {len(va)} val / {len(te)} test nodes")
    return graph_bundle(graph, PLANETOID_CLASSES[name], note, **batching)


@DATASETS.register("cora")
def cora(*, root: str | None = None, download: bool = False, row_normalize: bool = True, batching: str = "full",
         num_neighbors: list[int] | None = None, batch_size: int = 64, eval_batch_size: int = 1024,
         seed: int = 0) -> DataBundle:
    """Cora citation graph: 2,708 papers, 1,433 word features, 7 topics, standard 140/500/1,000 split."""
    return _planetoid("cora", root, download, row_normalize, batching=batching, num_neighbors=num_neighbors,
                      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)


@DATASETS.register("citeseer")
def citeseer(*, root: str | None = None, download: bool = False, row_normalize: bool = True, batching: str = "full",
         num_neighbors: list[int] | None = None, batch_size: int = 64, eval_batch_size: int = 1024,
         seed: int = 0) -> DataBundle:
    """CiteSeer citation graph: 3,327 papers, 3,703 word features, 6 topics, standard 120/500/1,000 split."""
    return _planetoid("citeseer", root, download, row_normalize, batching=batching, num_neighbors=num_neighbors,
                      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)


@DATASETS.register("pubmed")
def pubmed(*, root: str | None = None, download: bool = False, row_normalize: bool = True, batching: str = "full",
         num_neighbors: list[int] | None = None, batch_size: int = 64, eval_batch_size: int = 1024,
         seed: int = 0) -> DataBundle:
    """PubMed diabetes citation graph: 19,717 papers, 500 TF-IDF features, 3 classes, 60/500/1,000 split."""
    return _planetoid("pubmed", root, download, row_normalize, batching=batching, num_neighbors=num_neighbors,
                      batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
