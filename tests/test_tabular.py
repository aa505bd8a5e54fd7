"""Tabular preprocessing from raw CSV rows (UCI Adult, scikit-learn's diabetes): the JSON state reproduces
scikit-learn, unseen categories and missing values at predict time, training end to end, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import datasets as sk_datasets

import deepfoundry
from deepfoundry.data.preprocess import (ENCODINGS, SCALINGS, TabularPreprocessor, categorical_frame,
                                         infer_columns, infer_task_type, numeric_frame)
from deepfoundry.data.tabular import ADULT_COLUMNS, read_adult
from deepfoundry.errors import DeepfoundryError
from deepfoundry.models.tabular import mlp_tabular
from test_cli import FAST, assert_one_line_error, run_cli
from conftest import FAST as FAST_API, require_shared_dataset

FEATURES = ADULT_COLUMNS[:-1]


@pytest.fixture(scope="module")
def adult_frame() -> pd.DataFrame:
    """The real UCI Adult rows (with their '?' missing values)."""
    return read_adult(require_shared_dataset("adult") / "adult.data")


@pytest.fixture(scope="module")
def adult_csv(adult_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 4,000 Adult rows as a user's CSV with a header and '?' for missing values."""
    path = tmp_path_factory.mktemp("csv") / "adult4k.csv"
    adult_frame.head(4000).to_csv(path, index=False, na_rep="?")
    return path


@pytest.fixture(scope="module")
def adult_run(adult_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> deepfoundry.Run:
    return deepfoundry.train("mlp-tabular", overrides={**FAST_API, "data.path": str(adult_csv),
                                                       "data.target": "income", "trainer.epochs": 3,
                                                       "trainer.threads": 1},
                             out=tmp_path_factory.mktemp("runs") / "adult")


def _sk_input(pre: TabularPreprocessor, frame: pd.DataFrame) -> pd.DataFrame:
    num = [c["name"] for c in pre.state["numeric"]]
    cat = [c["name"] for c in pre.state["categorical"]]
    return pd.concat([pd.DataFrame(numeric_frame(frame, num)), pd.DataFrame(categorical_frame(frame, cat), dtype=object)],
                     axis=1, ignore_index=True)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_json_state_reproduces_sklearn(adult_frame: pd.DataFrame, encoding: str, scaling: str) -> None:
    train, test = adult_frame.iloc[:3000], adult_frame.iloc[3000:6000]
    num, cat = infer_columns(train, "income")
    fitted = TabularPreprocessor.fit(train, num, cat, scaling=scaling, imputation="mean", encoding=encoding)
    loaded = TabularPreprocessor(json.loads(json.dumps(fitted.state)))  # what a run saves and reloads
    ours = loaded.transform(test)
    theirs = fitted.sklearn_transformer.transform(_sk_input(fitted, test))
    if encoding == "embedding":  # scikit-learn's ordinal codes are ours minus one (0 is our 'unseen')
        theirs[:, -len(cat):] += 1
    assert ours.shape == theirs.shape == (3000, len(loaded.feature_names))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_column_and_task_inference(adult_frame: pd.DataFrame) -> None:
    num, cat = infer_columns(adult_frame, "income")
    assert num == ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    assert "workclass" in cat and "native-country" in cat and "income" not in cat
    num, cat = infer_columns(adult_frame, "income", categorical=["education-num"], drop=["fnlwgt"])
    assert "education-num" in cat and "fnlwgt" not in num + cat
    assert infer_task_type(adult_frame["income"]) == "classification"
    assert infer_task_type(adult_frame["education-num"]) == "classification"  # 16 integer values
    assert infer_task_type(adult_frame["age"]) == "regression"  # 73 integer values
    assert infer_task_type(adult_frame["education-num"], "regression") == "regression"
    with pytest.raises(DeepfoundryError, match="data.numeric.*'nope'"):
        infer_columns(adult_frame, "income", numeric=["nope"])


def test_unseen_category_and_missing_values(adult_frame: pd.DataFrame) -> None:
    train = adult_frame.iloc[:5000]
    assert train["workclass"].isna().any()  # Adult's real '?' values
    num, cat = infer_columns(train, "income")
    pre = TabularPreprocessor.fit(train, num, cat, imputation="median", encoding="onehot")
    row = train.iloc[[0]].copy()
    row["workclass"] = "Martian-gov"          # never seen in training
    row["age"] = np.nan                        # missing numeric
    row["occupation"] = "?"                    # missing categorical, written the CSV way
    x = pre.transform(row)[0]
    names = pre.feature_names
    wc = [i for i, n in enumerate(names) if n.startswith("workclass=")]
    assert x[wc].sum() == 0  # unseen -> all zeros
    assert x[names.index("occupation=<missing>")] == 1
    age = pre.state["numeric"][0]
    assert age["fill"] == float(train["age"].median())
    assert x[0] == pytest.approx((age["fill"] - age["center"]) / age["scale"])
    emb = TabularPreprocessor.fit(train, num, cat, encoding="embedding")
    codes = emb.transform(row)[0, -len(cat):]
    assert codes[cat.index("workclass")] == 0 and codes[cat.index("occupation")] >= 1
    with pytest.raises(DeepfoundryError, match="lack the feature column.*'age'"):
        pre.transform(row.drop(columns=["age"]))


def test_mlp_tabular_embeddings() -> None:
    model = mlp_tabular(num_classes=2, num_numeric=3, cardinalities=[5, 44], hidden_sizes=[8])
    assert [e.embedding_dim for e in model.embeddings] == [4, 13]
    x = torch.tensor([[0.1, -1.0, 2.0, 4, 0], [0.0, 0.0, 0.0, 0, 43]])
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 2) and model.embeddings[1].weight.grad[43].abs().sum() > 0


def test_adult_csv_trains_and_predicts_raw_rows(adult_run: deepfoundry.Run, adult_csv: Path, tmp_path: Path,
                                               capsys) -> None:
    info = adult_run.info
    assert info["task_type"] == "classification" and info["class_names"] == ["<=50K", ">50K"]
    assert info["num_train"] + info["num_val"] + info["num_test"] == 4000
    saved = json.loads((adult_run.path / "model.json").read_text())["info"]["tabular"]
    assert saved["kind"] == "tabular" and saved["encoding"] == "embedding"
    assert not list(adult_run.path.rglob("*.pkl")) and not list(adult_run.path.rglob("*.joblib"))
    acc = adult_run.results["test"]["accuracy"]
    assert acc > 0.80, acc  # the majority class is 76%
    rows = pd.read_csv(adult_csv, dtype=str, keep_default_na=False).head(3).drop(columns=["income"])
    rows.loc[0, "workclass"] = "Martian-gov"
    rows.loc[1, "hours-per-week"] = ""
    rows.loc[2, "native-country"] = "?"
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    out_csv = tmp_path / "preds.csv"
    code, out, _ = run_cli(["predict", str(adult_run.path), str(path), "--out", str(out_csv), "--json"], capsys)
    assert code == 0
    preds = json.loads(out.strip().splitlines()[-1])["predictions"]
    assert len(preds) == 3 and all(p["label"] in ("<=50K", ">50K") for p in preds)
    written = pd.read_csv(out_csv)
    assert list(written.columns[:len(rows.columns)]) == list(rows.columns)  # the input rows, then the answers
    assert list(written.columns[-4:]) == ["label", "probability", "p(<=50K)", "p(>50K)"]
    api = deepfoundry.load_run(adult_run.path).predict_table(path)
    assert list(api.columns) == ["prediction", "probability", "p(<=50K)", "p(>50K)"]
    np.testing.assert_allclose(api["p(>50K)"], [p["probabilities"][">50K"] for p in preds], rtol=1e-5)
    np.testing.assert_allclose(api[["p(<=50K)", "p(>50K)"]].sum(axis=1), 1.0, rtol=1e-5)
    rows.drop(columns=["age"]).to_csv(path, index=False)
    code, out, err = run_cli(["predict", str(adult_run.path), str(path)], capsys)
    assert_one_line_error(code, out, err, r"lack the feature column\(s\) 'age'")


def test_csv_regression_with_onehot(tmp_path: Path) -> None:
    bunch = sk_datasets.load_diabetes(scaled=False, as_frame=True)
    frame = bunch.frame.rename(columns={"target": "progression"})
    frame["sex"] = frame["sex"].map({1.0: "f", 2.0: "m"})  # a real categorical column
    frame.loc[::7, "bmi"] = np.nan  # missing values
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    run = deepfoundry.train("mlp-tabular", overrides={**FAST_API, "data.path": str(path), "data.target": "progression",
                                                      "data.encoding": "onehot", "data.scaling": "robust",
                                                      "trainer.epochs": 30, "trainer.threads": 1}, out=tmp_path / "run")
    assert run.info["task_type"] == "regression" and "sex=f" in run.info["feature_names"]
    assert "bmi_missing" in run.info["feature_names"]
    assert run.results["test"]["r2"] > 0.2, run.results["test"]
    values = run.predict_table(frame.drop(columns=["progression"]).head(5))["prediction"]
    assert values.between(20, 400).all()


def _cli_train(csv: Path, target: str, capsys) -> tuple[int, str, str]:
    return run_cli(["train", "mlp-tabular", *FAST, "--set", f"data.path={csv}", "--set", f"data.target={target}",
                    "--epochs", "1", "--out", str(csv.parent / "run")], capsys)


def test_bad_csv_input_errors(tmp_path: Path, adult_csv: Path, capsys) -> None:
    code, out, err = _cli_train(adult_csv, "salary", capsys)
    assert_one_line_error(code, out, err, r"no target column 'salary'; its columns: age, workclass, .*income")
    one = tmp_path / "one.csv"
    pd.read_csv(adult_csv).head(50).assign(income="<=50K").to_csv(one, index=False)
    code, out, err = _cli_train(one, "income", capsys)
    assert_one_line_error(code, out, err, r"target 'income' .* has one class \('<=50K'\)")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, out, err = _cli_train(empty, "income", capsys)
    assert_one_line_error(code, out, err, r"CSV file .*empty.csv' is empty")
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"a,b\n\xff\xfe\x00\x81,\x90\n")
    code, out, err = _cli_train(garbage, "a", capsys)
    assert_one_line_error(code, out, err, r"CSV file .*garbage.csv' is not readable")
    code, out, err = _cli_train(tmp_path / "nope.csv", "a", capsys)
    assert_one_line_error(code, out, err, r"CSV file .*nope.csv' does not exist")


@pytest.mark.slow
def test_adult_recipe_reaches_84_percent(tmp_path: Path) -> None:
    root = require_shared_dataset("adult")
    run = deepfoundry.train("mlp-adult", overrides={**FAST_API, "data.root": str(root)}, out=tmp_path / "adult")
    assert run.info["num_train"] + run.info["num_val"] + run.info["num_test"] == 32561
    assert run.results["test"]["accuracy"] >= 0.84, run.results["test"]


def test_no_rows_transform_and_the_smallest_table() -> None:
    from deepfoundry.data.tabular import check_table_size

    frame = pd.DataFrame({"age": [20.0, None, 40.0], "city": ["a", "b", None]})
    for encoding in ENCODINGS:
        pre = TabularPreprocessor.fit(frame, ["age"], ["city"], encoding=encoding)
        assert pre.transform(frame.iloc[:0]).shape == (0, len(pre.feature_names))  # an empty val split
    check_table_size(7, 0.1, 0.2, "t.csv")
    with pytest.raises(DeepfoundryError, match=r"t.csv has 6 rows .* 5 train / 0 val / 1 test .* at least 7 rows"):
        check_table_size(6, 0.1, 0.2, "t.csv")
    with pytest.raises(DeepfoundryError, match=r"numeric column 'age' has an infinite value"):
        numeric_frame(pd.DataFrame({"age": [1.0, float("inf")]}), ["age"])
