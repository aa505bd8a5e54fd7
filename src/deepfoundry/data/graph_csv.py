"""A user's own graph for node classification, from two CSV files.

``data.edges``: one edge a line, a header naming ``source`` and ``target`` (and an optional
``weight``, read and checked, but the models use the unweighted graph)::

    source,target
    alice,bob
    bob,carol

``data.nodes``: one node a line, a header with the id column (``data.id_column``, default ``id``),
the label column (``data.label_column``, default ``label``; an empty cell is an unlabelled node,
in no split), an optional split column (``data.split_column``: ``train`` / ``val`` / ``test`` or
empty) and numeric feature columns (every other column, or ``data.feature_columns``). Ids are
strings matched exactly; the graph is undirected.

What is checked, and what happens:

- an edge naming an id that has no row in the node file: an error naming the id and its line (and
  every other missing id), unless ``data.missing_features=zero``, which adds those nodes with zero
  features (after standardisation: the training mean) and no label (a warning says how many);
- a duplicate node id, a non-numeric feature, an unknown split value: an error naming the line;
- isolated nodes (no edge): kept; GCN's self-loop lets them keep their own features, and the split
  note counts them;
- no edge at all: trains, with a warning that every layer then sees one node, an MLP.

Splits: ``data.split_column``, or a random split of the labelled nodes stratified by class from
the run's seed (``data.val_fraction``, ``data.test_fraction``). Features are standardised with the
training nodes' mean and standard deviation (``data.standardize=false`` keeps them as they are).
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DeepfoundryError
from ..registry import DATASETS
from ..splits import stratified_split_of_all
from .core import DataBundle
from .graphs import graph_bundle, make_graph

SPLITS = ("train", "val", "test")


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(line number, cells), ...])`` of a CSV file; blank lines skipped."""
    if not path.is_file():
        raise DeepfoundryError(f"CSV file '{path}' does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DeepfoundryError(f"'{path}' is empty; it needs a header line")
        rows = [(reader.line_num, [c.strip() for c in row]) for row in reader if any(c.strip() for c in row)]
    return [h.strip() for h in header], rows


def _column(header: list[str], name: str, path: Path, what: str) -> int:
    if name not in header:
        raise DeepfoundryError(f"'{path}' has no {what} column {name!r}; its header is {', '.join(header)}")
    return header.index(name)


def read_node_csv(path: Path, id_column: str, label_column: str, split_column: str | None,
                  feature_columns: list[str] | None) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """``(ids, features (N, F), labels as strings ('' = none), split values)`` of the node file."""
    header, rows = _rows(path)
    i_id = _column(header, id_column, path, "id")
    i_label = _column(header, label_column, path, "label")
    i_split = _column(header, split_column, path, "split") if split_column else None
    skip = {i_id, i_label, i_split}
    cols = ([_column(header, c, path, "feature") for c in feature_columns] if feature_columns
            else [i for i in range(len(header)) if i not in skip])
    if not cols:
        raise DeepfoundryError(f"'{path}' has no feature columns besides {id_column!r} and {label_column!r}")
    ids, labels, splits, feats, seen = [], [], [], [], {}
    for line, cells in rows:
        if len(cells) != len(header):
            raise DeepfoundryError(f"'{path}' line {line}: {len(cells)} cells, the header has {len(header)}")
        node = cells[i_id]
        if node in seen:
            raise DeepfoundryError(f"'{path}' line {line}: node id {node!r} already appeared on line {seen[node]}")
        seen[node] = line
        try:
            feats.append([float(cells[i]) for i in cols])
        except ValueError:
            bad = next(header[i] for i in cols if not _is_float(cells[i]))
            raise DeepfoundryError(f"'{path}' line {line}: feature {bad!r} is not a number: "
                                   f"{cells[header.index(bad)]!r}") from None
        ids.append(node)
        labels.append(cells[i_label])
        splits.append(cells[i_split].lower() if i_split is not None else "")
        if i_split is not None and splits[-1] not in SPLITS + ("",):
            raise DeepfoundryError(f"'{path}' line {line}: split {cells[i_split]!r} is not train, val, test or empty")
    if not ids:
        raise DeepfoundryError(f"'{path}' has no node rows")
    x = np.asarray(feats, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DeepfoundryError(f"'{path}': node features contain NaN or infinite values")
    return ids, x, labels, splits


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_edge_csv(path: Path, index: dict[str, int], missing_features: str, nodes_path: Path
                  ) -> tuple[np.ndarray, list[str]]:
    """``(edge_index (2, E), ids that have no node row)``; ``index`` maps ids to rows and grows when
    ``missing_features='zero'``."""
    header, rows = _rows(path)
    i_src = _column(header, "source", path, "source")
    i_dst = _column(header, "target", path, "target")
    i_w = header.index("weight") if "weight" in header else None
    pairs, missing, first_line = [], [], None
    for line, cells in rows:
        if len(cells) != len(header):
            raise DeepfoundryError(f"'{path}' line {line}: {len(cells)} cells, the header has {len(header)}")
        if i_w is not None and not (_is_float(cells[i_w]) and np.isfinite(float(cells[i_w]))):
            raise DeepfoundryError(f"'{path}' line {line}: weight {cells[i_w]!r} is not a finite number")
        for node in (cells[i_src], cells[i_dst]):
            if node not in index:
                first_line = first_line or (line, node)
                missing.append(node)
                index[node] = len(index)  # provisional row; an error below unless missing_features=zero
        pairs.append((index[cells[i_src]], index[cells[i_dst]]))
    if missing and missing_features != "zero":
        line, node = first_line
        listed = ", ".join(repr(m) for m in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise DeepfoundryError(
            f"'{path}' line {line}: node id {node!r} is not in '{nodes_path}' ({len(missing)} ids of the edge list "
            f"have no feature row: {listed}); add their rows, or set data.missing_features=zero to give them zero "
            "features and no label")
    if i_w is not None:
        warnings.warn(f"'{path}': the weight column is read but the models use the unweighted graph", stacklevel=3)
    edge_index = np.asarray(pairs, dtype=np.int64).reshape(-1, 2).T
    return edge_index, missing


@DATASETS.register("graph-csv")
def graph_csv(*, edges: str, nodes: str, root: str | None = None, id_column: str = "id", label_column: str = "label",
              split_column: str | None = None, feature_columns: list[str] | None = None,
              missing_features: str = "error", standardize: bool = True, batching: str = "full",
              num_neighbors: list[int] | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
              seed: int = 0, batch_size: int = 64, eval_batch_size: int = 1024) -> DataBundle:
    """Your own graph: an edge-list CSV (source,target) and a node CSV (id, features..., label)."""
    if missing_features not in ("error", "zero"):
        raise DeepfoundryError(f"data.missing_features must be 'error' or 'zero', received {missing_features!r}")
    base = Path(root).expanduser() if root else Path(".")
    nodes_path, edges_path = base / nodes, base / edges
    ids, x, labels, splits = read_node_csv(nodes_path, id_column, label_column, split_column, feature_columns)
    index = {node: i for i, node in enumerate(ids)}
    edge_index, missing = read_edge_csv(edges_path, index, missing_features, nodes_path)
    if missing:
        warnings.warn(f"{len(missing)} node ids of '{edges_path}' have no row in '{nodes_path}': added with zero "
                      "features and no label (data.missing_features=zero)", stacklevel=2)
        x = np.concatenate([x, np.zeros((len(missing), x.shape[1]), dtype=np.float32)])
        labels += [""] * len(missing)
        splits += [""] * len(missing)
    n = len(x)
    labelled = np.array([lab != "" for lab in labels])
    if not labelled.any():
        raise DeepfoundryError(f"'{nodes_path}': no node has a label in column {label_column!r}")
    class_names = sorted({lab for lab in labels if lab})
    y = np.array([class_names.index(lab) if lab else 0 for lab in labels], dtype=np.int64)
    masks = {s: np.zeros(n, dtype=bool) for s in SPLITS}
    if split_column:
        for s in SPLITS:
            masks[s] = np.array([v == s for v in splits]) & labelled
    else:
        where = np.flatnonzero(labelled)
        try:
            parts = stratified_split_of_all(y[where], val_fraction, test_fraction, seed)
        except DeepfoundryError as exc:
            raise DeepfoundryError(f"'{nodes_path}': labelled nodes: {exc}; give every class more labelled nodes "
                                   "or set data.split_column") from None
        for s, part in zip(SPLITS, parts):
            masks[s][where[part]] = True
    if standardize and masks["train"].any():
        mean, std = x[masks["train"]].mean(axis=0), x[masks["train"]].std(axis=0)
        x = (x - mean) / np.where(std > 1e-8, std, 1.0)
        x[len(ids):] = 0.0  # rows added for missing ids stay zero: the training mean
    degree = np.bincount(edge_index.ravel(), minlength=n) if edge_index.size else np.zeros(n, dtype=np.int64)
    isolated = int((degree == 0).sum())
    if edge_index.shape[1] == 0:
        warnings.warn(f"'{edges_path}' has no edges: every GNN layer sees only its own node, so the model "
                      "degrades to an MLP on the node features", stacklevel=2)
    graph = make_graph(x, y, edge_index, *(torch.as_tensor(masks[s]) for s in SPLITS), sparse_features=False,
                       source=f"'{nodes_path}'")
    note = (f"{n:,} nodes ({isolated} isolated: GCN's self-loop keeps their own features), "
            f"{graph.edge_index.shape[1] // 2:,} undirected edges, {len(class_names)} classes: "
            + " / ".join(f"{int(masks[s].sum())} {s}" for s in SPLITS)
            + (f" from column {split_column!r}" if split_column else f" nodes, stratified (seed {seed})"))
    bundle = graph_bundle(graph, class_names, note, batching, num_neighbors, batch_size, eval_batch_size, seed)
    bundle.info.update(node_ids_file=str(nodes_path), isolated_nodes=isolated, missing_feature_rows=len(missing))
    return bundle
