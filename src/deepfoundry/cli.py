"""The command line: ``deepfoundry list | train | evaluate | predict | generate | play | report | cv | compare | tune
| export | optimize``.

Every verb takes a recipe name, a config file or a run directory. ``--json`` prints the result as
one JSON object on the last line of stdout. Errors are one ``error:`` line on stderr with exit code
2; ``deepfoundry --debug VERB ...`` shows the traceback instead.
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import DeepfoundryError, printable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="deepfoundry: train, evaluate, predict and report classic deep-learning models.")


class Listing(str, Enum):
    models = "models"
    datasets = "datasets"
    recipes = "recipes"
    tasks = "tasks"


def _print_version(value: bool) -> None:
    if value:
        from ._version import __version__

        print(f"deepfoundry {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """deepfoundry: train, evaluate, predict and report classic deep-learning models."""


def _echo_json(obj: Any) -> None:
    print(json.dumps(obj, default=str))


@app.command("list")
def list_(what: Listing = typer.Argument(..., help="models, datasets, recipes or tasks")) -> None:
    """List registered models, datasets, tasks or shipped recipes with a one-line description."""
    from . import DATASETS, MODELS, TASKS
    from .config import load_raw, recipe_names

    if what is Listing.recipes:
        for name in recipe_names():
            raw = load_raw(name)
            print(f"{name:28s} {raw.get('description', '')}")
        return
    registry = {"models": MODELS, "datasets": DATASETS, "tasks": TASKS}[what.value]
    for name in registry.names():
        print(f"{name:28s} {registry.describe(name)}")


@app.command()
def train(
    recipe: Optional[str] = typer.Argument(None, help="recipe name (deepfoundry list recipes) or CONFIG.yaml"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override any config key: --set optim.lr=0.01"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<recipe>-<timestamp>)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this directory exactly"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="trainer.epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="data.batch_size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="optim.lr"),
    device: Optional[str] = typer.Option(None, "--device", help="trainer.device: auto, cpu, cuda, mps"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="data.root: folder of a local copy"),
    show_loop: bool = typer.Option(False, "--show-loop", help="print the order of the training loop's calls"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html and model_card.md (trainer.report)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="empty an existing --out folder first (it is refused "
                                                               "otherwise)"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as JSON on the last line"),
) -> None:
    """Train a recipe or config file; prints the run directory and the final metrics."""
    from .api import train as train_run

    if recipe is None and resume is None:
        raise DeepfoundryError("train needs a RECIPE (see 'deepfoundry list recipes') or --resume RUN")
    overrides: dict[str, Any] = {}
    for key, value in (("trainer.epochs", epochs), ("data.batch_size", batch_size), ("optim.lr", lr),
                       ("trainer.device", device), ("seed", seed), ("data.root", data_root)):
        if value is not None:
            overrides[key] = value
    from .config import apply_overrides, flatten_keys

    extra = apply_overrides({}, list(set_ or []))
    flat = flatten_keys(extra)
    flat.update(overrides)
    if no_report:
        flat["trainer.report"] = False
    run = train_run(recipe, overrides=flat, out=out, resume=resume, show_loop=show_loop, overwrite=overwrite)
    from .engine.distributed import is_secondary

    if run is None or is_secondary():  # torchrun: rank 0 alone prints (docs/distributed.md)
        return
    results = run.results
    print(f"run directory: {run.path}")
    test = results.get("test") or results.get("eval", {})  # RL runs report their greedy evaluation
    summary = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
    print(f"test: {summary}  ({results.get('seconds', 0):.1f}s)")
    if results.get("privacy"):
        p = results["privacy"]
        print(f"privacy: epsilon {p['epsilon']:.3f} at delta {p['delta']:g} (noise multiplier "
              f"{p['noise_multiplier']:.3f}, max_grad_norm {p['max_grad_norm']:g}, Poisson rate {p['sample_rate']:.4f})")
    if as_json:
        summary_json = {"run": str(run.path), "test": _scalars(test), "val": _scalars(results.get("val", {})),
                        "seconds": round(results.get("seconds", 0.0), 3), "world_size": results.get("world_size", 1)}
        if results.get("privacy"):  # DP-SGD runs: the budget spent (docs/privacy.md)
            summary_json["privacy"] = results["privacy"]
        _echo_json(summary_json)


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="run directory"),
    split: str = typer.Option("test", "--split", help="train, val or test"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder of the data, if it moved"),
    device: str = typer.Option("cpu", "--device", help="device to evaluate on"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON on the last line"),
) -> None:
    """Evaluate a finished run's model on a split."""
    from .api import load_run

    metrics = load_run(run_dir).evaluate(split, data_root=data_root, device=device)
    for k, v in _scalars(metrics).items():
        print(f"{split}_{k}: {v:.4f}")
    if as_json:
        _echo_json({"run": str(run_dir), split: _scalars(metrics)})


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="run directory"),
    inputs: list[str] = typer.Argument(..., help="image files or .npy arrays; for text runs, the texts themselves; "
                                             "for tabular runs, CSV files of raw rows"),
    as_json: bool = typer.Option(False, "--json", help="print the predictions as JSON on the last line"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the predictions as CSV (tabular runs: the input "
                                                           "rows with their predictions)"),
) -> None:
    """Predict image files, .npy arrays, (text runs) raw strings or (tabular runs) CSV rows with a finished run."""
    from .api import load_run

    rows = load_run(run_dir).predict_files(inputs, out=out)
    if out is not None:
        print(f"predictions: {out}")
    for r in rows:
        print("  ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in r.items()
                        if k != "probabilities"))
    if as_json:
        _echo_json({"run": str(run_dir), "predictions": rows})


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="run directory of a language-model run (e.g. char-lstm-shakespeare)"),
    prompt: str = typer.Option("\n", "--prompt", help="text the sample starts with"),
    tokens: int = typer.Option(300, "--tokens", min=0, help="tokens (characters, for char models) to sample"),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="softmax temperature; 0 is greedy"),
    top_k: int = typer.Option(40, "--top-k", min=0, help="sample among the k most likely tokens (0: all)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed of the sampler (reproducible samples)"),
    as_json: bool = typer.Option(False, "--json", help="print the sample as JSON on the last line"),
) -> None:
    """Sample text from a language-model run: the prompt continued by --tokens tokens."""
    from .api import load_run

    text = load_run(run_dir).generate(prompt, tokens, temperature, top_k or None, seed)
    print(text)
    if as_json:
        _echo_json({"run": str(run_dir), "prompt": prompt, "text": text})


@app.command()
def translate(
    run_dir: Path = typer.Argument(..., help="run directory of a translation run (e.g. seq2seq-attention-multi30k)"),
    texts: list[str] = typer.Argument(..., help="source sentences, one argument each"),
    beam: int = typer.Option(1, "--beam", min=1, help="beam size (1: greedy decoding)"),
    length_penalty: Optional[float] = typer.Option(None, "--length-penalty", help="GNMT alpha in ((5+|Y|)/6)^alpha "
                                                   "(default: the run's task.length_penalty)"),
    as_json: bool = typer.Option(False, "--json", help="print the translations as JSON on the last line"),
) -> None:
    """Translate sentences with a translation run; prints one translation per line."""
    from .api import load_run

    outputs = load_run(run_dir).translate(texts, beam=beam, length_penalty=length_penalty)
    for text in outputs:
        print(text)
    if as_json:
        _echo_json({"run": str(run_dir), "beam": beam, "translations": outputs})


@app.command()
def play(
    run_dir: Path = typer.Argument(..., help="run directory of a reinforcement-learning run (e.g. dqn-cartpole)"),
    episodes: int = typer.Option(10, "--episodes", min=1, help="greedy episodes to play"),
    seed: int = typer.Option(0, "--seed", help="seed of the first episode (then seed+1, ...)"),
    record: Optional[Path] = typer.Option(None, "--record", help="write an animated GIF of the first episode here"),
    as_json: bool = typer.Option(False, "--json", help="print mean_return and std_return as JSON on the last line"),
) -> None:
    """Play a trained agent's greedy policy; prints the mean and standard deviation of the return."""
    from .api import load_run

    result = {"run": str(run_dir), **load_run(run_dir).play(episodes, seed, record)}
    print(f"{result['env_id']}: mean return {result['mean_return']:.2f} +- {result['std_return']:.2f} "
          f"over {episodes} episodes")
    if result.get("record"):
        print(f"recording: {result['record']}")
    if as_json:
        _echo_json(result)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="run directory"),
    feature_maps: bool = typer.Option(False, "--feature-maps", help="also save the first conv layer's filters and "
                                                                    "its feature maps for one test input"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder of the data, if it moved"),
) -> None:
    """Write report.html (learning curves, confusion matrix, ROC/PR, calibration, worst examples) into the run."""
    from .api import load_run
    from .report import write_report

    path = write_report(load_run(run_dir), feature_maps=feature_maps, data_root=data_root)
    print(f"report: {path}")


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="run directory of a GAN or VAE run (e.g. dcgan-mnist, vae-digits)"),
    n: int = typer.Option(64, "--n", help="number of images"),
    cls: Optional[int] = typer.Option(None, "--class", help="class to generate (conditional models only)"),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG grid (or .npy array) to write; default RUN/sample.png"),
    seed: int = typer.Option(0, "--seed", help="seed of the noise"),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="a classifier run on the same data "
                                              "(e.g. lenet5-mnist): print the offline quality score"),
    as_json: bool = typer.Option(False, "--json", help="print the output path (and score) as JSON on the last line"),
) -> None:
    """Generate images with a GAN or VAE run and write them as one grid (or a .npy array)."""
    import numpy as np

    from .api import load_run
    from .generative import quality_score, sample_images
    from .report import save_grid

    run = load_run(run_dir)
    images = sample_images(run, n, cls, seed)
    path = out or run.path / "sample.png"
    if path.suffix.lower() == ".npy":
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, images.numpy())
    else:
        save_grid(images, path, nrow=max(1, int(round(n ** 0.5))))
    print(f"samples: {path}")
    result: dict[str, Any] = {"run": str(run_dir), "out": str(path), "n": n, "class": cls}
    if classifier is not None:
        score = quality_score(images, load_run(classifier), target_class=cls)
        shown = ("confident_share", "classes_present", "max_class_share", "label_match")
        print("  ".join(f"{k} {score[k]:.4f}" if isinstance(score[k], float) else f"{k} {score[k]}"
                        for k in shown if k in score))
        result["score"] = score
    if as_json:
        _echo_json(result)


@app.command()
def interpolate(
    run_dir: Path = typer.Argument(..., help="run directory of a GAN or VAE run"),
    rows: int = typer.Option(8, "--rows", help="number of interpolations (grid rows)"),
    steps: int = typer.Option(10, "--steps", help="images per interpolation (grid columns)"),
    cls: Optional[int] = typer.Option(None, "--class", help="class of every row (conditional models only)"),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG grid to write; default RUN/interpolation.png"),
    seed: int = typer.Option(0, "--seed", help="seed of the end points"),
) -> None:
    """Write spherical interpolations between random latent points as one grid (a row per pair)."""
    from .api import load_run
    from .generative import interpolate as interpolate_run
    from .report import save_grid

    run = load_run(run_dir)
    images = interpolate_run(run, rows, steps, cls, seed)
    path = save_grid(images, out or run.path / "interpolation.png", nrow=steps)
    print(f"interpolation: {path}")


@app.command()
def cv(
    recipe: str = typer.Argument(..., help="recipe name or CONFIG.yaml"),
    folds: int = typer.Option(5, "--folds", help="number of folds k (>= 2); stratified for classification"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override any config key: --set trainer.epochs=5"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder of the fold runs (runs/<recipe>-cv-<time>)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="trainer.epochs"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed (also picks the folds)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="data.root: folder of a local copy"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on the last line"),
) -> None:
    """k-fold cross-validation: train the recipe once per fold; print mean +- std of each test metric."""
    from .config import apply_overrides, flatten_keys
    from .crossval import cross_validate, format_summary

    if folds < 2:
        raise DeepfoundryError(f"cross-validation needs --folds >= 2, received {folds}")
    flat = flatten_keys(apply_overrides({}, list(set_ or [])))
    for key, value in (("trainer.epochs", epochs), ("seed", seed), ("data.root", data_root)):
        if value is not None:
            flat[key] = value
    summary = cross_validate(recipe, folds=folds, overrides=flat, out=out)
    print(format_summary(summary))
    print(f"cv directory: {summary['path']}")
    if as_json:
        _echo_json(summary)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="run directories to compare"),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="test metric to show (repeatable; default all)"),
    as_json: bool = typer.Option(False, "--json", help="print the table as JSON on the last line"),
) -> None:
    """Tabulate runs side by side: recipe, config values that differ, weights, test metrics, wall time."""
    from .compare import compare_runs, format_comparison

    table = compare_runs(list(run_dirs), metrics=list(metric or []) or None)
    print(format_comparison(table))
    if as_json:
        _echo_json(table)


@app.command("tune")
def tune_(
    recipe: str = typer.Argument(..., help="recipe name or CONFIG.yaml to tune"),
    space: str = typer.Option(..., "--space", help="space file (YAML: config key -> {type: float|int|categorical, ...}) "
                                                   "or a shipped space's name"),
    trials: int = typer.Option(20, "--trials", help="finished trials the study should hold in total (reruns continue)"),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe or random (seeded by --seed, default the recipe's)"),
    pruner: str = typer.Option("median", "--pruner", help="median, hyperband or none (judged on the epoch metric)"),
    prune_after: Optional[int] = typer.Option(None, "--prune-after", help="epochs a trial runs before it can be "
                                              "pruned (median: epochs/10; hyperband: 1)"),
    metric: Optional[str] = typer.Option(None, "--metric", help="validation metric, e.g. val.accuracy "
                                                                "(default: the recipe's trainer.monitor)"),
    direction: Optional[str] = typer.Option(None, "--direction", help="maximize or minimize (default from the metric)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL (default sqlite:///OUT/study.db)"),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="study name (default: the recipe's name)"),
    workers: int = typer.Option(1, "--workers", help="parallel processes on this machine sharing the storage"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="seconds after which no new trial starts"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="fixed override of every trial: --set trainer.epochs=10"),
    out: Optional[Path] = typer.Option(None, "--out", help="tuning folder (default runs/tune-<recipe>)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="sampler seed (default: the recipe's seed)"),
    verbose: bool = typer.Option(False, "--verbose", help="show every trial's epoch lines"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on the last line"),
) -> None:
    """Search hyperparameters with Optuna; writes OUT/best.yaml, trials.csv/json and plots."""
    from .tune import tune as run_tune

    result = run_tune(recipe, space, trials, sampler=sampler, pruner=pruner, metric=metric, direction=direction,
                      storage=storage, study_name=study_name, workers=workers, timeout=timeout,
                      overrides=list(set_ or []), out=out, seed=seed, verbose=verbose, prune_after=prune_after)
    print(result.summary())
    if as_json:
        _echo_json({k: v for k, v in result.to_dict().items() if k != "trials"})


@app.command("augment-preview")
def augment_preview(
    recipe: str = typer.Argument(..., help="recipe name or CONFIG.yaml whose data.augment to preview"),
    out: Path = typer.Option(Path("augment-preview.png"), "--out", help="PNG grid to write (image data)"),
    n: int = typer.Option(16, "--n", help="number of training samples"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override any config key: --set data.augment=strong"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="data.root: folder of a local copy"),
    seed: int = typer.Option(0, "--seed", help="which augmentation draw to show"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on the last line"),
) -> None:
    """Write a grid of augmented training images (originals on top), or print augmented texts."""
    from .api import augment_preview as preview

    overrides = list(set_ or []) + ([f"data.root={data_root}"] if data_root else [])
    result = preview(recipe, out, n, overrides=overrides, seed=seed)
    if result["kind"] == "text":
        for ex in result["examples"]:
            print(f"- {ex['original']}\n+ {ex['augmented']}")
    else:
        print(f"augment preview: {result['out']} ({result['n']} originals on top, augmented below: "
              f"{', '.join(result['transforms'])})")
    if as_json:
        _echo_json(result)


@app.command()
def audit(
    run_dir: Path = typer.Argument(..., help="run directory of a binary classifier on raw table rows (table-csv, adult)"),
    sensitive: str = typer.Option(..., "--sensitive", help="sensitive column(s) of the raw rows: sex or sex,race "
                                                           "(groups are their intersection)"),
    split: str = typer.Option("test", "--split", help="train, val or test"),
    mitigate: Optional[str] = typer.Option(None, "--mitigate", help="threshold: fairlearn ThresholdOptimizer fitted "
                                                                    "on val, saved as RUN/fairness/threshold.json"),
    constraint: str = typer.Option("demographic_parity", "--constraint", help="demographic_parity or equalized_odds"),
    tolerance: str = typer.Option("auto", "--tolerance", help="demographic parity: allowed selection-rate spread "
                                  "(auto: a third of the unmitigated val spread; none: exact parity)"),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="bootstrap resamples for the 95% intervals (0: none)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap and of the randomised mitigated decisions"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder of the data, if it moved"),
    as_json: bool = typer.Option(False, "--json", help="print audit.json on the last line"),
) -> None:
    """Fairness audit per group (fairlearn): selection rate, accuracy, TPR, FPR; DP/EO gaps with bootstrap CIs."""
    from .api import load_run
    from .responsible.fairness import audit as run_audit
    from .responsible.fairness import format_audit

    tol: Any = tolerance
    if tolerance.lower() == "none":
        tol = None
    elif tolerance != "auto":
        try:
            tol = float(tolerance)
        except ValueError:
            raise DeepfoundryError(f"--tolerance must be auto, none or a number, received {tolerance!r}") from None
    result = run_audit(load_run(run_dir), sensitive, split=split, mitigate=mitigate, constraint=constraint,
                       bootstrap=bootstrap, tolerance=tol, seed=seed, data_root=data_root)
    print(format_audit(result))
    print(f"audit: {Path(result['run']) / 'fairness' / 'audit.json'}")
    if as_json:
        _echo_json(result)


@app.command()
def serve(
    path: Path = typer.Argument(..., help="run directory or export bundle"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", help="port to listen on (0: any free port)"),
    backend: str = typer.Option("torch", "--backend", help="torch or onnx (exports RUN/export/onnx first if missing)"),
    max_batch: int = typer.Option(32, "--max-batch", help="most examples per forward pass (and per request)"),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="longest wait for more requests to join a batch"),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="largest request body (413 above)"),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="environment variable holding the API key "
                                              "(clients send 'Authorization: Bearer KEY')"),
    log: Optional[Path] = typer.Option(None, "--log", help="append one JSON line per request (time, inputs, "
                                                           "predictions)"),
    drift_window: int = typer.Option(500, "--drift-window", help="examples the live drift score covers"),
) -> None:
    """Serve a run over HTTP: POST /v1/predict, a web page at /, /metrics; SIGTERM finishes queued work, exit 0."""
    from .deploy.serve import serve as run_server

    run_server(path, host=host, port=port, backend=backend, max_batch=max_batch, max_wait_ms=max_wait_ms,
               max_body_mb=max_body_mb, api_key_env=api_key_env, log=log, drift_window=drift_window)


@app.command("monitor")
def monitor_(
    path: Path = typer.Argument(..., help="run directory or export bundle"),
    log: Path = typer.Option(..., "--log", help="request log written by 'deepfoundry serve --log'"),
    threshold: float = typer.Option(0.2, "--threshold", help="PSI above which the stream has drifted"),
    drift_window: Optional[int] = typer.Option(None, "--drift-window", help="last N logged examples (default all)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on the last line"),
) -> None:
    """Drift of logged requests against the run's training data: writes RUN/monitor/drift.json and drift.html."""
    from .deploy.monitor import monitor as run_monitor

    result = run_monitor(path, log, threshold=threshold, window=drift_window)
    for name, row in result["features"].items():
        print(f"{name:24s} psi {row['psi']:.4f}  ks {row['ks']:.4f}")
    print(f"{'predictions':24s} psi {result['predictions']['psi']:.4f}")
    print(f"drift score {result['drift_score']:.4f} (threshold {result['threshold']}): "
          f"{'DRIFTED' if result['drifted'] else 'stable'} over {result['examples']} examples; {result['out']}/drift.html")
    if as_json:
        _echo_json(result)


@app.command("export")
def export_(
    run_dir: Path = typer.Argument(..., help="run directory to export"),
    fmt: str = typer.Option("onnx", "--format", help="onnx, torchscript or exported-program (torch.export, .pt2)"),
    out: Optional[Path] = typer.Option(None, "--out", help="bundle folder (default RUN/export/<format>)"),
    limit: int = typer.Option(1000, "--limit", help="test examples the parity check runs through the graph"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder of the run's data, if it moved"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON on the last line"),
) -> None:
    """Export a run as a bundle (graph + weights + bundle.json), checked against the run's own predictions."""
    from .deploy.export import check_format, export_run, summary_line

    result = export_run(run_dir, check_format(fmt), out=out, parity_limit=limit, data_root=data_root)
    print(summary_line(result))
    if as_json:
        _echo_json(result)


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="run directory of a classifier"),
    inputs: list[str] = typer.Argument(..., help="inputs as for predict: image files or .npy arrays, texts, CSV rows"),
    method: str = typer.Option("integrated-gradients", "--method", help="saliency, integrated-gradients, gradcam, "
                                                                        "shapley or attention"),
    target: Optional[str] = typer.Option(None, "--target", help="class index or label to explain (default: the "
                                                                "predicted class of each input)"),
    sanity: bool = typer.Option(False, "--sanity", help="cascading weight randomisation: Spearman rank correlation "
                                                        "per layer"),
    steps: Optional[int] = typer.Option(None, "--steps", min=2, help="integrated gradients: quadrature steps "
                                        "(default: 64, doubled until completeness is within 1%)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the images/HTML (default RUN/explanations)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON on the last line"),
) -> None:
    """Explain a classifier's decisions with captum: saliency, integrated gradients, Grad-CAM, Shapley, attention."""
    from .api import load_run
    from .responsible.explain import explain as run_explain
    from .responsible.explain import format_explanation

    summary = run_explain(load_run(run_dir), inputs, method=method, target=target, sanity=sanity, out=out,
                          steps=steps)
    print(format_explanation(summary))
    if as_json:
        _echo_json(summary)


@app.command("optimize")
def optimize_(
    run_dir: Path = typer.Argument(..., help="run directory to optimise"),
    quantize: Optional[str] = typer.Option("dynamic", "--quantize", help="dynamic (int8 Linear/LSTM weights), static "
                                           "(int8 CNN, calibrated on training batches) or none"),
    prune: Optional[float] = typer.Option(None, "--prune", help="also prune this fraction of weights (global L1)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder of the variants (default RUN/export)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="folder of the run's data, if it moved"),
    as_json: bool = typer.Option(False, "--json", help="print the table as JSON on the last line"),
) -> None:
    """Quantise and/or prune a run; each variant is a bundle, compared on size, latency and test metric."""
    from .deploy.optimize import format_table, optimize_run

    result = optimize_run(run_dir, quantize=None if quantize in (None, "none") else quantize, prune=prune, out=out,
                          data_root=data_root)
    print(format_table(result))
    if as_json:
        _echo_json(result)


class Role(str, Enum):
    local = "local"
    server = "server"
    client = "client"


@app.command()
def federate(
    recipe: str = typer.Argument(..., help="recipe name or CONFIG.yaml (each client trains it on its partition)"),
    clients: int = typer.Option(5, "--clients", help="number of clients"),
    rounds: int = typer.Option(10, "--rounds", help="federated rounds"),
    partition: str = typer.Option("iid", "--partition", help="iid or dirichlet:ALPHA (label skew; small ALPHA: "
                                                             "few classes per client)"),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg or fedprox"),
    proximal_mu: float = typer.Option(0.01, "--proximal-mu", help="fedprox: weight mu of mu/2 ||w - w_global||^2"),
    local_epochs: int = typer.Option(1, "--local-epochs", help="epochs each client trains per round"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override any config key (privacy.epsilon=3: "
                                                                 "client-side DP-SGD)"),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="data.root: folder of a local copy"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<recipe>-federated-<time>)"),
    role: Role = typer.Option(Role.local, "--role", help="local (server + client processes here), server or client"),
    address: Optional[str] = typer.Option(None, "--address", help="HOST:PORT of the server (--role server|client)"),
    partition_id: Optional[int] = typer.Option(None, "--partition-id", help="--role client: which partition (0..K-1)"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as JSON on the last line"),
) -> None:
    """Federated learning with Flower: FedAvg/FedProx over client processes; writes a normal run directory."""
    from .engine.logging import stderr_console
    from .responsible.federated import federate as run_federation
    from .responsible.federated import join_federation, parse_partition

    overrides = list(set_ or []) + ([f"data.root={data_root}"] if data_root else [])
    parse_partition(partition)
    if role is Role.client:
        if address is None or partition_id is None:
            raise DeepfoundryError("--role client needs --address HOST:PORT (the SuperLink's Fleet API) and "
                                   "--partition-id K")
        code = join_federation(address, partition_id, clients)
        if code:
            raise typer.Exit(code)
        return
    path, results = run_federation(recipe, clients, rounds, partition, strategy, proximal_mu, local_epochs,
                                   overrides, out, stderr_console(), role=role.value, address=address)
    from .api import load_run

    run = load_run(path)
    if run.config.trainer.report:
        from .report import write_report
        from .responsible.model_card import write_model_card

        write_report(run)
        write_model_card(run)
    test = results.get("test") or {}
    print(f"run directory: {run.path}")
    print(f"test: {', '.join(f'{k} {v:.4f}' for k, v in test.items() if isinstance(v, float))}  "
          f"({results.get('seconds', 0):.1f}s, {rounds} rounds, {clients} clients)")
    if as_json:
        summary_json = {"run": str(run.path), "test": _scalars(test), "val": _scalars(results.get("val", {})),
                        "seconds": round(results.get("seconds", 0.0), 3), "federated": results.get("federated")}
        if results.get("privacy"):
            summary_json["privacy"] = results["privacy"]
        _echo_json(summary_json)


def _quiet_rank() -> bool:
    """A torchrun worker other than rank 0: its messages would repeat rank 0's."""
    from .engine.distributed import is_secondary

    return is_secondary()


@app.command()
def bench(
    list_only: bool = typer.Option(False, "--list", help="list the benchmarks and exit"),
    only: Optional[str] = typer.Option(None, "--only", help="run only these benchmarks: NAME[,NAME...]"),
    quick: bool = typer.Option(False, "--quick", help="pass --quick to every script (the suite in <= 15 min on 2 "
                               "cores; smoke figures)"),
    folder: Path = typer.Option(Path("benchmarks"), "--dir", help="the benchmarks folder of a checkout"),
    out: Optional[Path] = typer.Option(None, "--out", help="where NAME.json, NAME.log, SUMMARY.md and "
                                       "summary.json go (default DIR/results; DIR/results/quick with --quick, "
                                       "so smoke figures never replace full results)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="seconds per script before it is "
                                            "killed and recorded as timed out"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json (or the list) as JSON on the last line"),
) -> None:
    """Run the checkout's benchmarks/*.py one by one; write each NAME.json, SUMMARY.md and summary.json."""
    from .bench import describe, discover, run_suite, select, summary_markdown

    names = select(discover(folder), only)
    if list_only:
        rows = [{"name": n, "description": describe(folder, n)} for n in names]
        if as_json:
            _echo_json(rows)
        else:
            for r in rows:
                print(f"{r['name']:24s} {r['description']}")
        return
    target = out or (folder / "results" / "quick" if quick else folder / "results")

    def progress(entry: dict[str, Any]) -> None:
        reason = f" ({entry['reason']})" if entry.get("reason") else ""
        print(f"{entry['name']}: {entry['status']} in {entry['seconds']:.1f} s ({entry['cpu_seconds']:.1f} CPU s)"
              f"{reason}", file=sys.stderr, flush=True)

    summary = run_suite(folder, names, target, quick=quick, timeout=timeout, progress=progress)
    if as_json:
        _echo_json(summary)
    else:
        print(summary_markdown(summary), end="")
        print(f"wrote {target / 'SUMMARY.md'} and {target / 'summary.json'}")
    if summary["failed"]:
        print(f"{len(summary['failed'])} of {len(names)} benchmarks did not finish: {', '.join(summary['failed'])} "
              f"(logs in {target})", file=sys.stderr)
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns user errors into one ``error:`` line and exit code 2.

    Signals end in one line too, with the shell's code for them (128 + signum): a training run
    stopped by SIGTERM or SIGINT (:class:`~deepfoundry.engine.signals.Stopped`, after its checkpoint)
    says where it stopped and how to continue, 143 or 130; Ctrl-C anywhere else prints
    ``error: interrupted`` (130), SIGTERM ``error: terminated by SIGTERM`` (143).
    """
    from .engine.signals import Stopped, Terminated, unwind_on_signals

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    with unwind_on_signals() as received:
        try:
            app(args=args, prog_name="deepfoundry")  # usage errors: typer prints them and exits 2
        except Stopped as exc:
            if debug:
                raise
            if not _quiet_rank():
                print(exc, file=sys.stderr)
            sys.exit(exc.exit_code)
        except DeepfoundryError as exc:
            if debug:
                raise
            if not _quiet_rank():  # under torchrun every rank meets the same bad input; rank 0 says it once
                print(f"error: {printable(str(exc))}", file=sys.stderr)
            sys.exit(2)
        except SystemExit as exc:
            if received.signum or exc.code == 130:  # typer turns a KeyboardInterrupt into a silent exit 130
                print("error: interrupted", file=sys.stderr)
                sys.exit(130)
            raise
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
        except Terminated:
            if debug:
                raise
            print("error: terminated by SIGTERM", file=sys.stderr)
            sys.exit(143)


if __name__ == "__main__":
    main()
