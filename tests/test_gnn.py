"""Graph neural networks: safe Planetoid reading, the Cora split, every GNN model, node classification
on Cora and the karate club, and bad graphs."""
from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import deepfoundry
from conftest import FAST, require_shared_dataset
from deepfoundry.data.graphs import (GraphLoader, RestrictedUnpickler, graph_bundle, make_graph,
                                     normalized_adjacency, safe_unpickle)
from deepfoundry.errors import DeepfoundryError
from deepfoundry.metrics import classification_metrics
from deepfoundry.models import MODELS, build_model
from deepfoundry.models.gnn import GNN
from deepfoundry.registry import DATASETS
from deepfoundry.tasks.node_classification import NodeClassificationTask, confusion_metrics

GNN_MODELS = [n for n in MODELS.names() if n in ("gcn", "sage", "gat", "gin")]


# ----------------------------------------------------------------------------- restricted unpickling

class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(str(marker)), protocol=2)
    with pytest.raises(DeepfoundryError, match="refusing to unpickle global '(posix|os|nt).system'"):
        safe_unpickle(payload, source="evil")
    assert not marker.exists()
    with pytest.raises(DeepfoundryError, match="builtins.eval"):
        safe_unpickle(b"cbuiltins\neval\n(S'1+1'\ntR.", source="evil")
    with pytest.raises(DeepfoundryError, match="not a readable pickle"):
        safe_unpickle(payload[:10], source="truncated")
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


def test_restricted_unpickler_reads_arrays_and_sparse() -> None:
    graph = collections.defaultdict(list, {0: [1, 2], 1: [0]})
    objs = [np.arange(6, dtype=np.float32).reshape(2, 3), sp.csr_matrix(np.eye(3)), graph]
    for obj in objs:
        back = safe_unpickle(pickle.dumps(obj, protocol=4))
        if sp.issparse(obj):
            assert (back != obj).nnz == 0
        elif isinstance(obj, np.ndarray):
            assert np.array_equal(back, obj) and back.dtype == obj.dtype
        else:
            assert back == obj


# ----------------------------------------------------------------------------- Cora

@pytest.fixture(scope="module")
def cora():
    return DATASETS.build("cora", {"root": str(require_shared_dataset("cora"))})


def test_cora_standard_split(cora) -> None:
    info, graph = cora.info, cora.train.graph
    assert info["num_nodes"] == 2708 and info["in_features"] == 1433 and info["num_classes"] == 7
    assert info["input_kind"] == "graph" and info["task_type"] == "classification"
    assert (cora.train.num_samples, cora.val.num_samples, cora.test.num_samples) == (140, 500, 1000)
    assert graph.train_mask[:140].all() and graph.val_mask[140:640].all()
    assert not (graph.train_mask & graph.test_mask).any() and not (graph.val_mask & graph.test_mask).any()
    assert graph.edge_index.shape == (2, 5278 * 2)  # 5,429 published edges, 5,278 unique undirected
    assert torch.bincount(graph.y).tolist() == [351, 217, 418, 818, 426, 298, 180]
    rows = graph.x.to_dense().sum(dim=1)  # row-normalised bag of words
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert len(cora.train) == 1
    assert list(cora.train.epoch_batches(0, skip=1)) == []
    adj = graph.adjacency.to_dense()
    assert torch.allclose(adj, adj.T) and adj.diagonal().gt(0).all()


def test_missing_planetoid_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeepfoundryError, match="no ind.cora.* files .*data.download=true"):
        DATASETS.build("cora", {"root": str(tmp_path)})


# ----------------------------------------------------------------------------- models

def _toy_graph(n: int = 12, f: int = 6, classes: int = 3, sparse: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=gen) < 0.3).float()
    ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
    y = torch.arange(n) % classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:classes] = True
    return make_graph(x, y, ring, mask, ~mask, ~mask, sparse_features=sparse)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense-x", "sparse-x"])
@pytest.mark.parametrize("name", GNN_MODELS)
def test_every_gnn_forward_backward(name: str, sparse: bool, one_thread) -> None:
    g = _toy_graph(sparse=sparse)
    for options in ({}, {"depth": 3, "residual": True, "norm": "layer"}, {"depth": 1}):
        torch.manual_seed(0)
        model = build_model(name, options, {"in_features": 6, "num_classes": 3})
        assert isinstance(model, GNN) and MODELS.describe(name)
        out = model(g.x, g.edge_index, g.adjacency)
        assert out.shape == (12, 3) and torch.isfinite(out).all()
        out.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        model.eval()
        with torch.no_grad():
            assert torch.allclose(model(g.x, g.edge_index), model(g.x, g.edge_index, g.adjacency), atol=1e-5)
            assert model.embed(g.x, g.edge_index, g.adjacency).shape[0] == 12


def test_gcn_matches_pyg_gcnconv() -> None:
    from torch_geometric.nn import GCNConv

    g = _toy_graph()
    model = build_model("gcn", {"depth": 1}, {"in_features": 6, "num_classes": 3}).eval()
    ref = GCNConv(6, 3)
    ref.lin.weight.data.copy_(model.convs[0].weight.T)
    ref.bias.data.copy_(model.convs[0].bias)
    assert torch.allclose(model(g.x, g.edge_index, g.adjacency), ref(g.x, g.edge_index), atol=1e-5)


def test_bad_model_options() -> None:
    ctx = {"in_features": 6, "num_classes": 3}
    with pytest.raises(DeepfoundryError, match="depth must be >= 1"):
        build_model("gcn", {"depth": 0}, ctx)
    with pytest.raises(DeepfoundryError, match="norm must be one of"):
        build_model("sage", {"norm": "group"}, ctx)


# ----------------------------------------------------------------------------- bad graphs

@pytest.fixture
def one_thread():
    """Full-batch steps on small graphs are many small ops: on a shared 2-core machine two torch threads
    spin against each other (30x slower on karate), one thread does not. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"trainer.threads": 1}
    torch.set_num_threads(threads)



def test_edge_index_out_of_range_and_malformed() -> None:
    x, y = torch.rand(4, 2), torch.zeros(4, dtype=torch.long)
    m = torch.tensor([True, False, False, False])
    with pytest.raises(DeepfoundryError, match="refers to node 7, but the graph has 4 nodes"):
        make_graph(x, y, torch.tensor([[0, 1], [1, 7]]), m, ~m, ~m)
    with pytest.raises(DeepfoundryError, match="refers to node -1"):
        make_graph(x, y, torch.tensor([[0, -1], [1, 2]]), m, ~m, ~m)
    with pytest.raises(DeepfoundryError, match=r"shape \(2, E\)"):
        make_graph(x, y, torch.tensor([[0, 1, 2]]), m, ~m, ~m)
    with pytest.raises(DeepfoundryError, match="3 rows but the feature matrix has 4"):  # a missing row
        make_graph(x, y[:3], torch.tensor([[0], [1]]), m, ~m, ~m)
    with pytest.raises(DeepfoundryError, match="NaN"):
        make_graph(torch.full((4, 2), float("nan")), y, torch.tensor([[0], [1]]), m, ~m, ~m)


def test_graph_without_edges_trains_as_an_mlp(one_thread) -> None:
    n = 8
    y = torch.arange(n) % 2
    x = torch.nn.functional.one_hot(y, 2).float() + 0.01 * torch.rand(n, 2)
    m = torch.zeros(n, dtype=torch.bool)
    m[:4] = True
    g = make_graph(x, y, torch.zeros(2, 0, dtype=torch.long), m, ~m, ~m)
    assert g.edge_index.shape == (2, 0)
    assert torch.equal(g.adjacency.to_dense(), torch.eye(n))  # only self-loops: isolated nodes keep their own state
    for name in GNN_MODELS:  # every layer copes with an empty edge list
        out = build_model(name, {}, {"in_features": 2, "num_classes": 2})(g.x, g.edge_index, g.adjacency)
        assert out.shape == (n, 2) and torch.isfinite(out).all(), name
    data = graph_bundle(g, ["a", "b"], "toy")
    torch.manual_seed(0)
    task = NodeClassificationTask(build_model("gcn", {"dropout": 0.0}, {"in_features": 2, "num_classes": 2}), data.info)
    trainer = deepfoundry.Trainer(deepfoundry.config.TrainerConfig(epochs=30, progress=False, threads=1),
                                  deepfoundry.config.OptimConfig(lr=0.05))
    trainer.fit(task, data)
    assert trainer.evaluate(data.test)["accuracy"] == 1.0


def test_isolated_nodes_and_duplicate_edges() -> None:
    x = torch.rand(5, 3)
    m = torch.tensor([True, True, False, False, False])
    g = make_graph(x, torch.zeros(5), torch.tensor([[0, 0, 1, 2, 2], [1, 1, 0, 2, 3]]), m, ~m, ~m)
    assert g.edge_index.tolist() == [[0, 1, 2, 3], [1, 0, 3, 2]]  # undirected, deduplicated, no self-loop
    assert torch.allclose(normalized_adjacency(g.edge_index, 5).to_dense()[4], torch.eye(5)[4])


def test_node_task_needs_a_graph_and_metrics_match_sklearn() -> None:
    with pytest.raises(DeepfoundryError, match="needs a graph data set"):
        NodeClassificationTask(torch.nn.Linear(2, 2), {"num_classes": 2, "input_kind": "table"})
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 5, 300), rng.integers(0, 4, 300)  # class 4 never true, class 5... none
    cm = np.zeros((5, 5), dtype=np.int64)
    np.add.at(cm, (target, pred), 1)
    ours, ref = confusion_metrics(cm), classification_metrics(pred, target, 5)
    for key, value in ref.items():
        assert ours[key] == (value if key == "confusion_matrix" else pytest.approx(value)), key


def test_graph_loader_protocol() -> None:
    g = _toy_graph()
    loader = GraphLoader(g, g.test_mask)
    batches = list(loader)
    assert len(loader) == 1 and len(batches) == 1 and loader.num_samples == 9
    assert set(batches[0]) == {"x", "edge_index", "adjacency", "y", "mask"}


# ----------------------------------------------------------------------------- end to end

def test_gcn_cora_recipe_reaches_kipf_accuracy(tmp_path: Path, one_thread) -> None:
    root = require_shared_dataset("cora")
    run = deepfoundry.train("gcn-cora", overrides={**FAST, **one_thread, "data.root": str(root)},
                            out=tmp_path / "run")
    assert run.results["epochs_run"] == 200
    assert run.results["test"]["accuracy"] >= 0.79  # paper: 81.5%; seed 0 gives 0.815


def test_gcn_karate_recovers_the_communities(tmp_path: Path, one_thread) -> None:
    run = deepfoundry.train("gcn-karate", overrides={**FAST, **one_thread}, out=tmp_path / "run")
    test = run.results["test"]
    cm = np.array(test["confusion_matrix"])
    assert test["accuracy"] >= 0.7
    assert (cm.argmax(axis=1) == np.arange(4)).all()  # every community's members mostly land in it
