"""Graph sections: a 2-D projection of learned node embeddings with, for small graphs, the graph drawn with
its predicted classes (``"node_embeddings"``), and the projection of pooled graph embeddings
(``"graph_embeddings"``).

The projection is t-SNE (scikit-learn, perplexity ``min(30, (n - 1) / 3)``, PCA initialisation, fixed
seed) up to ``TSNE_LIMIT`` points, PCA above (t-SNE is quadratic in the number of points). The
drawing uses networkx's spring layout (Fruchterman-Reingold, fixed seed).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..data.graphs import GraphLoader
from .html import embed_figure
from .sections import SECTIONS

if TYPE_CHECKING:
    from ..api import Run

TSNE_LIMIT = 5000
DRAW_LIMIT = 200  # graphs up to this many nodes are drawn


def project_2d(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, H) -> ``((n, 2), method)``: t-SNE for up to ``TSNE_LIMIT`` points, else PCA."""
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    if n < 5 or features.shape[1] < 2:
        pad = np.zeros((n, 2))
        pad[:, :min(2, features.shape[1])] = features[:, :2]
        return pad, "raw"
    if n <= TSNE_LIMIT:
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
        return tsne.fit_transform(features), "t-SNE"
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(features), "PCA"


def projection_figure(features: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                      class_names: list[str] | None, what: str) -> tuple[plt.Figure, str]:
    """Two scatter plots of the 2-D projection: coloured by the true class and by the predicted class."""
    xy, method = project_2d(features)
    k = int(max(labels.max(initial=0), predictions.max(initial=0))) + 1
    names = class_names or [str(i) for i in range(k)]
    colours = plt.cm.tab10(np.arange(k) % 10)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
    for ax, values, title in ((axes[0], labels, "true class"), (axes[1], predictions, "predicted class")):
        for c in range(k):
            pick = values == c
            if pick.any():
                ax.scatter(xy[pick, 0], xy[pick, 1], s=8 if len(xy) > 500 else 25, color=colours[c],
                           label=names[c] if c < len(names) else str(c), alpha=0.8)
        ax.set(title=f"{method} of the {what} embeddings, {title}", xticks=[], yticks=[])
    axes[0].legend(fontsize="small", markerscale=2)
    return fig, method


def graph_figure(edge_index: np.ndarray, num_nodes: int, predictions: np.ndarray, labels: np.ndarray,
                 labelled: np.ndarray, class_names: list[str] | None) -> plt.Figure:
    """The graph drawn with a spring layout: fill colour = predicted class, ring colour = true class,
    labelled (training) nodes as squares."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(num_nodes))
    g.add_edges_from((int(a), int(b)) for a, b in edge_index.T if a < b)
    pos = nx.spring_layout(g, seed=0)
    k = int(max(labels.max(initial=0), predictions.max(initial=0))) + 1
    colours = plt.cm.tab10(np.arange(k) % 10)
    fig, ax = plt.subplots(figsize=(8, 7), layout="constrained")
    nx.draw_networkx_edges(g, pos, ax=ax, alpha=0.3)
    for shape, pick in (("o", ~labelled), ("s", labelled)):
        nodes = np.flatnonzero(pick)
        if len(nodes):
            nx.draw_networkx_nodes(g, pos, nodelist=nodes.tolist(), node_shape=shape, ax=ax, node_size=260,
                                   node_color=colours[predictions[nodes]], edgecolors=colours[labels[nodes]],
                                   linewidths=2.5)
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=7)
    names = class_names or [str(i) for i in range(k)]
    for c in range(k):
        ax.scatter([], [], color=colours[c], label=names[c] if c < len(names) else str(c))
    errors = int((predictions != labels).sum())
    ax.set(title=f"Predicted communities (fill) vs true (ring); squares: labelled nodes; {errors} of "
                 f"{num_nodes} misclassified")
    ax.legend(fontsize="small")
    ax.axis("off")
    return fig


def _first_non_empty(data: Any) -> Any:
    """The test split, else val, else train: the first with samples (``None`` when all are empty)."""
    return next((s for s in (data.test, data.val, data.train) if s.num_samples), None)


@SECTIONS.register("node_embeddings")
@torch.no_grad()
def node_embeddings(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """A 2-D projection of the test nodes' learned embeddings (``model.embed``, the input of the output
    layer) coloured by class; graphs of up to ``DRAW_LIMIT`` nodes drawn with their predicted classes (the
    karate club's communities)."""
    task = run.task
    data = run.data(data_root)
    loader = _first_non_empty(data)
    if loader is None:
        return []
    task.eval()
    feats, labels, preds = [], [], []
    for batch in loader:  # one batch (full graph) or sampled neighbourhoods of the split's nodes
        mask = batch["mask"]
        feats.append(task.model.embed(batch["x"], batch["edge_index"], batch.get("adjacency"))[mask])
        preds.append(task.logits(batch)[mask].argmax(dim=1))
        labels.append(batch["y"][mask])
    names = task.info.get("class_names")
    fig, method = projection_figure(torch.cat(feats).numpy(), torch.cat(labels).numpy(),
                                    torch.cat(preds).numpy(), names, "node")
    sections = [("Node embeddings", f"<p>Each point is one of the {len(torch.cat(labels))} nodes of the split, "
                 f"placed by a {method} projection of its learned embedding (the last hidden layer); left "
                 "coloured by the true class, right by the predicted one.</p>"
                 + embed_figure(fig, plots, "node_embeddings"))]
    g = data.train.graph
    if g.num_nodes <= DRAW_LIMIT:
        full = GraphLoader(g, g.train_mask).batch()
        pred = task.logits(full).argmax(dim=1).numpy()
        fig = graph_figure(g.edge_index.numpy(), g.num_nodes, pred, g.y.numpy(), g.train_mask.numpy(), names)
        acc = float((pred[~g.train_mask.numpy()] == g.y.numpy()[~g.train_mask.numpy()]).mean())
        sections.append(("Predicted classes on the graph", f"<p>{g.num_nodes} nodes drawn with a spring layout; "
                         f"accuracy on the {int((~g.train_mask).sum())} unlabelled nodes: {acc:.3f}.</p>"
                         + embed_figure(fig, plots, "graph_predictions")))
    return sections


@SECTIONS.register("graph_embeddings")
@torch.no_grad()
def graph_embeddings(run: "Run", plots: Path, data_root: str | None) -> list[tuple[str, str]]:
    """A 2-D projection of the test graphs' pooled embeddings (the input of the classifier head), coloured by
    class."""
    task = run.task
    data = run.data(data_root)
    loader = _first_non_empty(data)
    if loader is None:
        return []
    task.eval()
    feats, labels, preds = [], [], []
    for batch in loader:
        r = task.model.features(batch["x"], batch["edge_index"], batch["batch"], int(batch["num_graphs"]))
        feats.append(r)
        labels.append(batch["y"])
        preds.append(task.model.head(r).argmax(dim=1))
    fig, method = projection_figure(torch.cat(feats).numpy(), torch.cat(labels).numpy(), torch.cat(preds).numpy(),
                                    task.info.get("class_names"), "graph")
    text = (f"<p>Each point is one of the {len(torch.cat(labels))} graphs of the split, placed by a {method} "
            "projection of its pooled readout (the input of the classifier head); left coloured by the true "
            "class, right by the predicted one. Separate clusters mean the message passing found the "
            "structure that tells the classes apart.</p>")
    return [("Graph embeddings", text + embed_figure(fig, plots, "graph_embeddings"))]
