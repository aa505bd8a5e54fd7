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
        if key == "per_class":
            assert {k: pytest.approx(v) for k, v in ours[key].items()} == value, key
        else:
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
    run = deepfoundry.train("gcn-cora", overrides={**FAST, **one_thread, "data.root": str(root),
                                                    "trainer.epochs": 200}, out=tmp_path / "run")
    assert run.results["epochs_run"] <= 200  # the recipe's early stopping (patience 100) may end it sooner
    assert run.results["test"]["accuracy"] >= 0.79  # paper: 81.5%


@pytest.fixture(scope="module")
def karate_run(tmp_path_factory):
    threads = torch.get_num_threads()
    try:
        return deepfoundry.train("gcn-karate", overrides={**FAST, "trainer.threads": 1},
                                 out=tmp_path_factory.mktemp("karate") / "run")
    finally:
        torch.set_num_threads(threads)


def test_gcn_karate_recovers_the_communities(karate_run) -> None:
    test = karate_run.results["test"]
    cm = np.array(test["confusion_matrix"])
    assert test["accuracy"] >= 0.7
    assert (cm.argmax(axis=1) == np.arange(4)).all()  # every community's members mostly land in it


# ============================================================================= graph classification

from deepfoundry.data.graph_sets import (SYNTHETIC_FAMILIES, GraphSet, GraphSetLoader, read_tu,  # noqa: E402
                                         synthetic_graph_set, write_tu)
from deepfoundry.data.graph_sampling import NeighborLoader, NeighborSampler  # noqa: E402
from deepfoundry.tasks.graph_classification import GraphClassificationTask  # noqa: E402

GRAPH_MODELS = ["gin_graph", "gcn_graph", "sage_graph", "mlp_graph"]


def test_graph_set_batch_matches_pyg_batch() -> None:
    from torch_geometric.data import Batch, Data

    graphs = synthetic_graph_set(num_graphs=12, seed=1)
    index = torch.tensor([5, 0, 11, 3])
    ours = graphs.batch(index)
    ref = Batch.from_data_list([Data(x=graphs.graph(int(g))[0], edge_index=graphs.graph(int(g))[1]) for g in index])
    assert torch.equal(ours["x"], ref.x) and torch.equal(ours["edge_index"], ref.edge_index)
    assert torch.equal(ours["batch"], ref.batch) and ours["num_graphs"] == 4
    assert torch.equal(ours["y"], graphs.y[index])


def test_graph_set_loader_shuffles_reproducibly_and_replays() -> None:
    graphs = synthetic_graph_set(num_graphs=40, seed=0)
    loader = GraphSetLoader(graphs, torch.arange(30), batch_size=8, shuffle=True, seed=3)
    assert len(loader) == 4 and loader.num_samples == 30
    first = [b["y"] for b in loader.epoch_batches(2)]
    assert [len(y) for y in first] == [8, 8, 8, 6]
    assert all(torch.equal(a, b) for a, b in zip(first, [b["y"] for b in loader.epoch_batches(2)]))
    assert all(torch.equal(a, b) for a, b in zip(first[2:], [b["y"] for b in loader.epoch_batches(2, skip=2)]))
    other = torch.cat([b["y"] for b in loader.epoch_batches(3)])
    assert sorted(other.tolist()) == sorted(torch.cat(first).tolist())


def test_synthetic_families_differ_only_in_structure() -> None:
    graphs = synthetic_graph_set(num_graphs=200, noise=0.0, seed=0)
    assert torch.bincount(graphs.y).tolist() == [50] * 4
    n, e = graphs.num_nodes(), (graphs.edge_ptr[1:] - graphs.edge_ptr[:-1]) // 2
    tree, cycle = graphs.y == SYNTHETIC_FAMILIES.index("tree"), graphs.y == SYNTHETIC_FAMILIES.index("cycle")
    assert torch.equal(e[tree], n[tree] - 1) and (e[cycle] >= n[cycle]).all()  # a tree has N - 1 edges
    assert n.min() >= 12 and n.max() <= 34  # a grid or a chain of cliques rounds the size up by at most 4
    # the node features carry no class information: per-class means of every feature agree
    node_class = torch.repeat_interleave(graphs.y, n)
    means = torch.stack([graphs.x[node_class == c].mean(dim=0) for c in range(4)])
    assert (means[:, 0] == 1).all() and (means[:, 1:] - means[:, 1:].mean(dim=0)).abs().max() < 0.1
    with pytest.raises(DeepfoundryError, match="num_graphs must be >= 4"):
        synthetic_graph_set(num_graphs=2)


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_graph_models_forward_backward_and_invariances(name: str, one_thread) -> None:
    graphs = synthetic_graph_set(num_graphs=8, seed=2)
    batch = graphs.batch(torch.arange(8))
    for options in ({}, {"pooling": "max", "readout": "all", "residual": True, "norm": "layer", "depth": 2},
                    {"pooling": "sum", "depth": 1}):
        torch.manual_seed(0)
        model = build_model(name, options, {"in_features": 8, "num_classes": 4})
        out = model(batch["x"], batch["edge_index"], batch["batch"], 8)
        assert out.shape == (8, 4) and torch.isfinite(out).all()
        out.square().mean().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():  # relabelling the nodes of the batch does not change any graph's output
        perm = torch.randperm(len(batch["x"]))
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(perm))
        moved = model(batch["x"][perm], inv[batch["edge_index"]], batch["batch"][perm], 8)
        assert torch.allclose(moved, model(batch["x"], batch["edge_index"], batch["batch"], 8), atol=1e-5)
        no_edges = model(batch["x"], batch["edge_index"][:, :0], batch["batch"], 8)
        same = torch.allclose(no_edges, model(batch["x"], batch["edge_index"], batch["batch"], 8), atol=1e-6)
        assert same == (name == "mlp_graph")  # only the baseline ignores the edges
    with pytest.raises(DeepfoundryError, match="pooling must be one of"):
        build_model(name, {"pooling": "median"}, {"in_features": 8, "num_classes": 4})


@pytest.fixture(scope="module")
def graph_runs(tmp_path_factory):
    """gin-graphs and its structure-blind baseline on a smaller synthetic set (one thread)."""
    out = tmp_path_factory.mktemp("graphs")
    small = {**FAST, "trainer.threads": 1, "data.num_graphs": 480, "trainer.epochs": 15}
    threads = torch.get_num_threads()
    try:
        return {m: deepfoundry.train("gin-graphs", overrides={**small, "model.name": m}, out=out / m)
                for m in ("gin_graph", "mlp_graph")}
    finally:
        torch.set_num_threads(threads)


def test_gin_beats_the_structure_blind_baseline(graph_runs) -> None:
    gin, mlp = (graph_runs[m].results["test"]["accuracy"] for m in ("gin_graph", "mlp_graph"))
    assert gin >= 0.85 and mlp <= 0.4, (gin, mlp)  # chance is 0.25: the class is only in the structure


def test_graph_run_predicts_batches_and_reports(graph_runs, one_thread) -> None:
    from deepfoundry.report import write_report

    run = deepfoundry.load_run(graph_runs["gin_graph"].path)
    data = run.data()
    batch = data.test.graphs.batch(data.test.index[:10])
    pred = run.predict(batch)
    assert pred.shape == (10,) and run.predict_proba(batch).shape == (10, 4)
    assert run.evaluate("test")["accuracy"] == pytest.approx(run.results["test"]["accuracy"])
    with pytest.raises(DeepfoundryError, match="graph runs predict a batch dict"):
        run.predict(np.zeros((2, 8)))
    write_report(run)
    assert (run.path / "plots" / "graph_embeddings.png").stat().st_size > 10_000
    new = GraphSet.from_graphs([(torch.ones(4, 8), torch.tensor([[0, 1, 2], [1, 2, 3]]))])  # one new graph
    assert run.predict(new.batch(torch.tensor([0]))).shape == (1,)


def test_graph_task_needs_a_graph_set() -> None:
    model = build_model("gin_graph", {}, {"in_features": 2, "num_classes": 2})
    with pytest.raises(DeepfoundryError, match="use task.name=node_classification"):
        GraphClassificationTask(model, {"num_classes": 2, "input_kind": "graph"})
    with pytest.raises(DeepfoundryError, match="needs a graph-level model"):
        GraphClassificationTask(torch.nn.Linear(2, 2), {"num_classes": 2, "input_kind": "graph_set"})


def test_tu_format_round_trip_and_errors(tmp_path: Path) -> None:
    graphs = synthetic_graph_set(num_graphs=40, seed=4)
    write_tu(graphs, tmp_path / "SYN", "SYN")
    back, classes = read_tu(tmp_path / "SYN", "SYN", use_node_attributes=True)
    assert classes == ["0", "1", "2", "3"] and torch.equal(back.y, graphs.y)
    assert torch.equal(back.edge_index, graphs.edge_index) and torch.equal(back.node_ptr, graphs.node_ptr)
    assert torch.allclose(back.x, graphs.x, atol=1e-5)
    data = DATASETS.build("tu", {"dataset": "SYN", "root": str(tmp_path), "use_node_attributes": True},
                          context={"seed": 0, "batch_size": 4})
    assert data.info["num_graphs"] == 40 and data.info["input_kind"] == "graph_set"
    # node labels become one-hot features; graph labels -1/1 become classes 0/1 (as in MUTAG)
    folder = tmp_path / "TINY"
    folder.mkdir()
    (folder / "TINY_A.txt").write_text("1, 2\n2, 1\n3, 4\n4, 3\n")
    (folder / "TINY_graph_indicator.txt").write_text("1\n1\n2\n2\n")
    (folder / "TINY_graph_labels.txt").write_text("-1\n1\n")
    (folder / "TINY_node_labels.txt").write_text("0\n2\n2\n0\n")
    tiny, classes = read_tu(folder, "TINY")
    assert classes == ["-1", "1"] and tiny.y.tolist() == [0, 1] and tiny.x.tolist()[:2] == [[1, 0], [0, 1]]
    (folder / "TINY_A.txt").write_text("1, 2\n2, 9\n")
    with pytest.raises(DeepfoundryError, match="line 2: node id 9 is out of range"):
        read_tu(folder, "TINY")
    with pytest.raises(DeepfoundryError, match="no MUTAG_A.txt .*data.download=true"):
        DATASETS.build("tu", {"root": str(tmp_path / "empty")})


# ============================================================================= a graph from CSV files

def _write_csv_graph(folder: Path, n: int = 60, seed: int = 0) -> None:
    """Two communities of ``n / 2`` nodes (dense inside, one bridge), features weakly tied to the class,
    one isolated node."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) >= n // 2).astype(int)
    rows = [f"n{i},{rng.normal() + 0.3 * y[i]:.4f},{rng.normal():.4f},{'AB'[y[i]]}" for i in range(n)]
    (folder / "nodes.csv").write_text("id,f1,f2,label\n" + "\n".join(rows) + "\nloner,0.5,0.5,A\n")
    edges = set()
    while len(edges) < 3 * n:
        c = rng.integers(0, 2)
        a, b = rng.integers(0, n // 2, 2) + c * (n // 2)
        if a != b:
            edges.add((int(a), int(b)))
    (folder / "edges.csv").write_text("source,target\n" + "\n".join(f"n{a},n{b}" for a, b in edges) + "\nn0,n59\n")


def test_csv_graph_trains(tmp_path: Path, one_thread) -> None:
    _write_csv_graph(tmp_path)
    overrides = {**FAST, **one_thread, "data.name": "graph-csv", "data.root": str(tmp_path),
                 "data.edges": "edges.csv", "data.nodes": "nodes.csv", "trainer.epochs": 60}
    run = deepfoundry.train("gcn-karate", overrides=overrides, out=tmp_path / "run")
    info = run.info
    assert info["num_nodes"] == 61 and info["isolated_nodes"] == 1 and info["class_names"] == ["A", "B"]
    assert info["num_train"] + info["num_val"] + info["num_test"] == 61
    assert run.results["test"]["accuracy"] >= 0.9  # the communities are in the edges, not in the features


def test_csv_graph_bad_inputs(tmp_path: Path) -> None:
    _write_csv_graph(tmp_path)
    build = lambda **kw: DATASETS.build("graph-csv", {"root": str(tmp_path), "edges": "edges.csv",  # noqa: E731
                                                      "nodes": "nodes.csv", **kw}, context={"seed": 0})
    (tmp_path / "bad.csv").write_text("source,target\nn1,n2\nn3,ghost\nn4,ghost2\nghost,n5\n")
    with pytest.raises(DeepfoundryError, match=r"'.*bad.csv' line 3: node id 'ghost' is not in .*nodes.csv.*"
                                               r"\(2 ids .*'ghost', 'ghost2'.*missing_features=zero"):
        build(edges="bad.csv")
    with pytest.warns(UserWarning, match="2 node ids .* added with zero features and no label"):
        data = build(edges="bad.csv", missing_features="zero")
    graph = data.train.graph
    assert data.info["num_nodes"] == 63 and graph.x[-2:].abs().sum() == 0
    assert not (graph.train_mask | graph.val_mask | graph.test_mask)[-2:].any()  # unlabelled: in no split
    (tmp_path / "dup.csv").write_text("id,f1,label\na,1,x\nb,2,y\na,3,x\n")
    with pytest.raises(DeepfoundryError, match="line 4: node id 'a' already appeared on line 2"):
        build(nodes="dup.csv")
    (tmp_path / "nan.csv").write_text("id,f1,label\na,1,x\nb,two,y\n")
    with pytest.raises(DeepfoundryError, match="line 3: feature 'f1' is not a number: 'two'"):
        build(nodes="nan.csv")
    with pytest.raises(DeepfoundryError, match="no label column 'klass'"):
        build(label_column="klass")
    (tmp_path / "none.csv").write_text("source,target\n")
    with pytest.warns(UserWarning, match="no edges: .* degrades to an MLP"):
        data = build(edges="none.csv")
    assert data.info["isolated_nodes"] == 61 and data.train.graph.edge_index.shape == (2, 0)


def test_csv_graph_split_column(tmp_path: Path) -> None:
    (tmp_path / "nodes.csv").write_text("id,f,label,part\na,1,x,train\nb,2,y,train\nc,3,x,val\nd,4,y,test\ne,5,,\n")
    (tmp_path / "edges.csv").write_text("source,target,weight\na,b,1.0\nc,d,2.5\n")
    with pytest.warns(UserWarning, match="weight column is read but"):
        data = DATASETS.build("graph-csv", {"root": str(tmp_path), "edges": "edges.csv", "nodes": "nodes.csv",
                                            "split_column": "part"})
    g = data.train.graph
    assert g.train_mask.tolist() == [True, True, False, False, False]
    assert g.val_mask.tolist() == [False, False, True, False, False] and g.test_mask[3] and not g.test_mask[4]
    (tmp_path / "nodes.csv").write_text("id,f,label,part\na,1,x,train\nb,2,y,holdout\n")
    with pytest.raises(DeepfoundryError, match="line 3: split 'holdout' is not train, val, test"):
        DATASETS.build("graph-csv", {"root": str(tmp_path), "edges": "edges.csv", "nodes": "nodes.csv",
                                     "split_column": "part"})


# ============================================================================= neighbour sampling

def test_neighbor_sampler_respects_fanout_and_edges() -> None:
    g = _toy_graph(n=40, seed=3)
    extra = torch.randint(0, 40, (2, 120), generator=torch.Generator().manual_seed(0))
    g = make_graph(g.x, g.y, torch.cat([g.edge_index, extra], dim=1), g.train_mask, g.val_mask, g.test_mask)
    sampler = NeighborSampler(g.edge_index, 40, [3, 2])
    seeds = torch.tensor([0, 5, 9])
    n_id, ei = sampler.sample(seeds, torch.Generator().manual_seed(1))
    assert torch.equal(n_id[:3], seeds) and len(torch.unique(n_id)) == len(n_id)
    true_edges = set(map(tuple, g.edge_index.T.tolist()))
    assert all((int(n_id[t]), int(n_id[s])) in true_edges for s, t in ei.T.tolist())  # every sampled edge exists
    into_seeds = torch.bincount(ei[1], minlength=len(n_id))[:3]
    degree = torch.bincount(g.edge_index[0], minlength=40)[seeds]
    assert torch.equal(into_seeds, torch.minimum(degree, torch.tensor(3)))  # min(degree, fan-out) neighbours each
    assert len(torch.unique(ei, dim=1).T) == ei.shape[1]  # no edge twice


def test_neighbor_batches_with_all_neighbours_equal_full_batch(one_thread) -> None:
    """SAGE of depth 2 on the 2-hop sampled subgraph with every neighbour (-1) computes exactly the seeds'
    full-graph outputs; GCN's loader batches carry the sampled graph's normalised adjacency."""
    g = _toy_graph(n=30, seed=5)
    extra = torch.randint(0, 30, (2, 60), generator=torch.Generator().manual_seed(2))
    g = make_graph(g.x, g.y, torch.cat([g.edge_index, extra], dim=1), g.train_mask, ~g.train_mask, ~g.train_mask)
    torch.manual_seed(0)
    model = build_model("sage", {}, {"in_features": 6, "num_classes": 3}).eval()
    full = model(g.x, g.edge_index)
    loader = NeighborLoader(g, g.test_mask, batch_size=7, num_neighbors=[-1, -1])
    seeds = torch.nonzero(g.test_mask).flatten()
    outs = [model(b["x"], b["edge_index"])[b["mask"]] for b in loader]
    assert torch.allclose(torch.cat(outs), full[seeds], atol=1e-5)
    batch = next(iter(loader))
    assert batch["adjacency"].layout == torch.sparse_csr and batch["adjacency"].shape[0] == len(batch["x"])


def test_neighbor_loader_protocol_and_options(one_thread) -> None:
    data = DATASETS.build("karate", {"batching": "neighbor", "num_neighbors": [4, 2]}, context={"batch_size": 2})
    train = data.train
    assert len(train) == 2 and train.num_samples == 4 and data.info["num_neighbors"] == [4, 2]
    a = [b["edge_index"] for b in train.epoch_batches(1)]
    b = [b["edge_index"] for b in train.epoch_batches(1, skip=1)]
    assert torch.equal(a[1], b[0])  # an interrupted epoch replays exactly
    first = next(iter(train))
    assert first["x"].layout == torch.sparse_csr  # karate's one-hot features stay sparse in sampled batches
    n_id_x = first["x"].to_dense()
    assert torch.equal(n_id_x.sum(dim=1), torch.ones(len(n_id_x)))
    assert all(int(b["mask"].sum()) == 2 for b in train.epoch_batches(0))
    with pytest.raises(DeepfoundryError, match="batching must be 'full' or 'neighbor'"):
        DATASETS.build("karate", {"batching": "cluster"})
    with pytest.raises(DeepfoundryError, match="num_neighbors needs data.batching=neighbor"):
        DATASETS.build("karate", {"num_neighbors": [5]})
    with pytest.raises(DeepfoundryError, match="list of positive fan-outs"):
        DATASETS.build("karate", {"batching": "neighbor", "num_neighbors": [0]})


def test_karate_report_draws_the_communities(karate_run, one_thread) -> None:
    from deepfoundry.report import write_report

    run = deepfoundry.load_run(karate_run.path)
    page = write_report(run).read_text()
    assert "Node embeddings" in page and "Predicted classes on the graph" in page
    assert (run.path / "plots" / "graph_predictions.png").stat().st_size > 10_000
    data = run.data()
    assert run.predict(data.test.batch()).shape == (34,)


@pytest.mark.slow
def test_neighbor_sampled_gcn_on_cora_is_close_to_full_batch(tmp_path: Path, one_thread) -> None:
    root = require_shared_dataset("cora")
    run = deepfoundry.train("gcn-cora", overrides={**FAST, **one_thread, "data.root": str(root),
                                                   "data.batching": "neighbor", "data.num_neighbors": [10, 5],
                                                   "data.batch_size": 32, "model.hidden_size": 16,
                                                   "model.dropout": 0.5}, out=tmp_path / "run")  # Kipf's sizes
    assert run.info["batching"] == "neighbor"
    assert run.results["test"]["accuracy"] >= 0.79  # full batch, same seed: 0.815
