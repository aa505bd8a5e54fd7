"""The adding problem at T=100: vanilla RNN vs LSTM vs GRU (recipes adding-rnn/-lstm/-gru), and the
LSTM recipe beside a plain hand-written PyTorch loop on the same model and data, in one run.

The plain loop is what a user would write: ``nn.LSTM(2, 64, batch_first=True)`` + ``nn.Linear(64, 1)``
on the last step, Adam at the recipe's learning rate, batch 64 from a fresh permutation each epoch,
gradient clipping at 1.0, the validation MSE after every epoch. Both sides use the same 20,000 /
2,000 / 5,000 sequences (``adding`` dataset, same seed), the same initial weights (same seed, same
construction order) and one torch thread. Reported per run: epochs and seconds until the
validation MSE first falls below 0.01 (epoch granularity), seconds per epoch, and the final test
MSE beside the trivial baseline (predict 1.0). It also plots ``||dL/dh_t||`` of the three trained
seed-0 models and their initialisations (benchmarks/results/adding_problem_gradients.png).

``--quick``: seed 0, the LSTM recipe and the plain loop, 1 epoch each (smoke figures: nothing is solved in one epoch).

usage: python benchmarks/adding_problem.py [--seeds 0 1] [--epochs 8] [--cells rnn lstm gru] [--skip-plain] [--quick]
       python benchmarks/adding_problem.py --throughput-rounds 4   (seconds per epoch, alternating)
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import print_table, results_dir, summary_row, write_result
import deepfoundry
from deepfoundry.data.timeseries import adding_problem

SOLVED = 0.01
QUICK = False  # --quick: where the plot goes (results/quick/ without $DEEPFOUNDRY_BENCH_OUT)
FAST = {"trainer.progress": False, "trainer.report": False, "trainer.tensorboard": False}


def ours(cell: str, seed: int, epochs: int, out: str) -> dict:
    run = deepfoundry.train(f"adding-{cell}", overrides={**FAST, "seed": seed, "trainer.epochs": epochs}, out=out)
    hist = run.history
    hit = next((r for r in hist if r["val_mse"] < SOLVED), None)
    return {"loop": f"deepfoundry adding-{cell}", "seed": seed, "epochs": len(hist),
            "steps": hist[-1]["step"], "epochs_to_0.01": hit["epoch"] if hit else None,
            "s_to_0.01": hit["elapsed"] if hit else None, "s_per_epoch": float(np.median([r["epoch_seconds"] for r in hist])),
            "best_val_mse": min(r["val_mse"] for r in hist), "test_mse": run.results["test"]["mse"],
            "trivial_mse": run.results["test"]["trivial_mse"], "train_seconds": run.results["train_seconds"],
            "run": run}


def plain(seed: int, epochs: int, lr: float, batch: int = 64, hidden: int = 64) -> dict:
    """The hand-written loop (see the module docstring)."""
    torch.set_num_threads(1)
    gen = np.random.default_rng(seed)  # the adding dataset draws train, val, test in this order
    (x, y), (xv, yv), (xt, yt) = [tuple(map(torch.from_numpy, adding_problem(n, 100, gen))) for n in (20000, 2000, 5000)]
    torch.manual_seed(seed)
    lstm, head = nn.LSTM(2, hidden, batch_first=True), nn.Linear(hidden, 1)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)

    def mse(a: torch.Tensor, b: torch.Tensor) -> float:
        with torch.no_grad():
            return F.mse_loss(head(lstm(a)[0][:, -1]), b).item()

    elapsed, hit, per_epoch, best = 0.0, None, [], float("inf")
    for epoch in range(epochs):
        started = time.perf_counter()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        xs, ys = x[perm], y[perm]
        for i in range(len(x) // batch + (len(x) % batch > 0)):
            xb, yb = xs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch]
            loss = F.mse_loss(head(lstm(xb)[0][:, -1]), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        val = mse(xv, yv)
        seconds = time.perf_counter() - started
        elapsed += seconds
        per_epoch.append(seconds)
        best = min(best, val)
        if hit is None and val < SOLVED:
            hit = (epoch + 1, elapsed)
    return {"loop": "plain PyTorch LSTM loop", "seed": seed, "epochs": epochs,
            "steps": epochs * (len(x) // batch + (len(x) % batch > 0)),
            "epochs_to_0.01": hit[0] if hit else None, "s_to_0.01": hit[1] if hit else None,
            "s_per_epoch": float(np.median(per_epoch)), "best_val_mse": best, "test_mse": mse(xt, yt),
            "trivial_mse": float(((yt - 1.0) ** 2).mean()), "train_seconds": elapsed}


def gradient_plot(runs: dict[str, "deepfoundry.Run"]) -> tuple[str, dict]:
    """||dL/dh_t|| of the trained models and of their initialisations, on 256 test sequences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepfoundry.engine import seed_everything
    from deepfoundry.models import build_model
    from deepfoundry.tasks.forecasting import gradient_profile

    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    profiles = {}
    for (cell, run), colour in zip(runs.items(), ("C0", "C1", "C2")):
        test = run.data().test
        x, y = test.x[:256].float(), test.y[:256].float()
        m = run.meta["model"]
        seed_everything(run.config.seed)
        init = build_model(m["name"], m["kwargs"], m["context"]).eval()
        profiles[cell] = {"init": gradient_profile(init, x, y).tolist(),
                          "trained": gradient_profile(run.model.eval(), x, y).tolist()}
        ax.plot(profiles[cell]["init"], "--", color=colour, label=f"{cell} at initialisation")
        ax.plot(profiles[cell]["trained"], color=colour, label=f"{cell} trained")
    ax.set(xlabel="time step t", ylabel="mean ||dL/dh_t||", yscale="log",
           title="Adding problem T=100: gradient reaching each step (BPTT)")
    ax.legend(fontsize="small", ncol=3)
    path = results_dir(QUICK) / "adding_problem_gradients.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path), profiles


def throughput(rounds: int) -> None:
    """Seconds per epoch of the LSTM, plain loop and recipe alternating (one epoch each, ``rounds`` times)."""
    cfg = deepfoundry.config.load_config("adding-lstm")
    hidden = cfg.model.builder_kwargs()["hidden_size"]
    plain_s, ours_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            first, second = (("plain", "ours") if r % 2 == 0 else ("ours", "plain"))
            for side in (first, second):
                if side == "plain":
                    plain_s.append(plain(0, 1, cfg.optim.lr, cfg.data.batch_size, hidden)["s_per_epoch"])
                else:
                    ours_s.append(ours("lstm", 0, 1, f"{tmp}/r{r}")["s_per_epoch"])
    rows = [{"loop": "plain PyTorch LSTM loop", "s_per_epoch (median)": float(np.median(plain_s)), "all": plain_s},
            {"loop": "deepfoundry adding-lstm", "s_per_epoch (median)": float(np.median(ours_s)), "all": ours_s}]
    print_table(rows)
    ratio = rows[1]["s_per_epoch (median)"] / rows[0]["s_per_epoch (median)"]
    print(f"median seconds per epoch, deepfoundry / plain: {ratio:.3f}")
    write_result("adding_problem_throughput", {"rounds": rounds, "table": rows, "ratio": ratio})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipes' epochs")
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--throughput-rounds", type=int, default=0,
                        help="only time one LSTM epoch per side, alternating, this many rounds")
    parser.add_argument("--quick", action="store_true", help="seed 0, LSTM only, 1 epoch (smoke)")
    args = parser.parse_args()
    if args.quick:
        global QUICK
        QUICK, args.seeds, args.epochs, args.cells = True, [0], 1, ["lstm"]
    if args.throughput_rounds:
        return throughput(args.throughput_rounds)
    cfg = deepfoundry.config.load_config("adding-lstm")
    epochs = args.epochs or cfg.trainer.epochs
    rows, trained = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            if not args.skip_plain and seed == args.seeds[0]:  # the plain loop on the first seed
                rows.append(plain(seed, epochs, cfg.optim.lr, cfg.data.batch_size, cfg.model.builder_kwargs()["hidden_size"]))
                print_table([rows[-1]])
            for cell in args.cells:
                row = ours(cell, seed, epochs, f"{tmp}/{cell}{seed}")
                run = row.pop("run")
                if seed == args.seeds[0]:
                    trained[cell] = run
                rows.append(row)
                print_table([row])
        plot, profiles = gradient_plot(trained)
    print()
    print_table(rows)
    pl = [r for r in rows if r["loop"].startswith("plain")]
    ls = [r for r in rows if r["loop"] == "deepfoundry adding-lstm"]
    ratio = None
    if pl and ls:
        ratio = float(np.mean([b["s_per_epoch"] / a["s_per_epoch"] for a, b in zip(pl, ls)]))
        print(f"deepfoundry adding-lstm seconds per epoch / plain loop's: {ratio:.3f}")
    print(f"gradient plot: {plot}")
    first = {r["loop"]: r for r in rows if r["seed"] == args.seeds[0]}
    summary = [summary_row(f"test MSE, {loop} (seed {args.seeds[0]}; trivial baseline about 0.167)", r["test_mse"],
                           target=f"< {SOLVED}", met=r["test_mse"] < SOLVED)
               for loop, r in first.items() if loop.startswith("deepfoundry")]
    if ratio is not None:
        summary.append(summary_row("s per epoch, adding-lstm vs plain LSTM loop (lower is better)",
                                   float(np.mean([r["s_per_epoch"] for r in ls])),
                                   float(np.mean([r["s_per_epoch"] for r in pl])), "plain PyTorch LSTM loop",
                                   ratio=ratio))
    path = write_result("adding_problem", {"epochs": epochs, "seeds": args.seeds, "threshold": SOLVED, "rows": rows,
                                           "seconds_per_epoch_ratio_lstm": ratio, "gradient_profiles": profiles},
                        quick=args.quick, summary=summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
