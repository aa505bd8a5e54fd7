"""Augmentation throughput: deepfoundry's batch augmentation on tensors (data/augment.py, per-sample
random parameters, one grid_sample per batch) beside kornia.augmentation (per-sample parameters on
batches too) op by op, and beside the usual per-sample PIL pipeline, in the same run.

1. Pipeline vs PIL (CIFAR-10): RandomCrop(32, padding=4), RandomHorizontalFlip(0.5),
   ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2). The PIL side is torchvision.transforms.v2
   on PIL images in a DataLoader, ending with ToImage + ToDtype(float32, scale=True) (the work a
   training loop waits for); the tensor sides (deepfoundry, kornia) start from the uint8 batch in memory.
2. Op by op, deepfoundry vs kornia: each op (and each preset) on float batches in [0, 1] of MNIST
   (1x28x28) and CIFAR-10 (3x32x32) images, batches of 128 and 256; the two implementations are timed
   alternately (ABAB...): the median of --repeats passes each, and the median ratio of neighbouring
   passes. kornia runs the way deepfoundry would have to call it for exact resume: its own sampler
   on the global CPU generator, seeded per batch and restored afterwards (kornia takes no
   ``torch.Generator``). For presets with a flip, flip_by_kornia_ratio times deepfoundry's preset
   with only the flip done by kornia. MixUp/CutMix include turning kornia's ``(y_a, y_b, lam)``
   labels into the soft targets deepfoundry returns.
3. Equivalence: kornia driven by explicit parameters built from deepfoundry's own draws (the other
   resume-exact route); max |difference| of the outputs.

usage: python benchmarks/augment_throughput.py [--quick] [--repeats 9] [--steps 4] [--threads 1]
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from _common import summary_row, SHARED, print_table, write_result
from deepfoundry.data.augment import PRESETS, BatchAugment
from deepfoundry.data.images import read_cifar_batch, read_idx

try:
    import kornia
    import kornia.augmentation as K
except ImportError:  # a benchmark-only requirement
    raise SystemExit("augment_throughput.py measures kornia beside deepfoundry: pip install kornia (0.9.0 measured)")

warnings.filterwarnings("ignore", module="kornia")
ENTRIES = [{"name": "RandomCrop", "padding": 4}, {"name": "RandomHorizontalFlip", "p": 0.5},
           {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}]
Batch = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------------------------- 1. vs PIL
class PILImages(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = [Image.fromarray(img.transpose(1, 2, 0)) for img in images]  # HWC uint8
        self.labels = labels
        self.transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(0.5),
                                     v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                                     v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def pil_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, workers: int) -> float:
    loader = DataLoader(PILImages(images, labels), batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=False)
    started = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - started)


def tensor_batches(augment: Callable[[Batch, int], Batch], images: np.ndarray, labels: np.ndarray,
                   batch_size: int, device: torch.device) -> float:
    x_all = torch.from_numpy(images).to(device)
    y_all = torch.from_numpy(labels).to(device)
    augment((x_all[:batch_size].float() / 255, y_all[:batch_size]), 0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    n = 0
    perm = torch.randperm(len(x_all), device=device)
    for b, i in enumerate(range(0, len(x_all), batch_size)):
        idx = perm[i:i + batch_size]
        x, _ = augment((x_all[idx].float() / 255, y_all[idx]), b)
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


# ----------------------------------------------------------------------------------------------- 2. op by op
def kornia_ops(entries: list[dict[str, Any]], h: int, w: int) -> list[Any]:
    """The kornia module for each deepfoundry entry, same parameters and semantics where kornia has them."""
    out = []
    for e in entries:
        name, kw = e["name"], {k: v for k, v in e.items() if k != "name"}
        if name == "RandomHorizontalFlip":
            out.append(K.RandomHorizontalFlip(p=kw.get("p", 0.5)))
        elif name == "RandomCrop":
            out.append(K.RandomCrop((h, w), padding=kw.get("padding", 4)))
        elif name == "RandomRotation":  # ours resamples with align_corners=False; kornia's default is True
            out.append(K.RandomRotation(kw["degrees"], p=1.0, align_corners=False))
        elif name == "RandomAffine":
            out.append(K.RandomAffine(kw.get("degrees", 0), translate=kw.get("translate"), scale=kw.get("scale"),
                                      p=1.0))  # kornia's default p=0.5 would leave half the images alone
        elif name == "RandomResizedCrop":
            out.append(K.RandomResizedCrop((h, w), scale=kw.get("scale", (0.08, 1.0)), align_corners=False))
        elif name == "ColorJitter":  # order fixed to b, c, s, h as ours (kornia's default shuffles it per call)
            out.append(K.ColorJitter(kw.get("brightness", 0), kw.get("contrast", 0), kw.get("saturation", 0),
                                     kw.get("hue", 0), order=(0, 1, 2, 3)))
        elif name == "RandomErasing":
            out.append(K.RandomErasing(p=kw.get("p", 0.5)))
        elif name == "MixUp":  # lam ~ U(0, 1) = Beta(1, 1), but one per image and random pairs
            out.append(K.RandomMixUpV2(data_keys=["input", "class"]))
        elif name == "CutMix":
            out.append(K.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True))
        else:
            raise ValueError(f"no kornia counterpart for {name}")
    return out


def kornia_soft_targets(labels: torch.Tensor, num_classes: int, mixup: bool) -> torch.Tensor:
    """kornia's ``(y_a, y_b, lam)`` rows (MixUp: x = (1-lam) x_a + lam x_b; CutMix with use_correct_lambda:
    lam = kept share of x_a) -> soft targets (B, C) as deepfoundry's loss takes them."""
    rows = labels.reshape(-1, labels.shape[-2], 3)[-1]  # (B, 3); one mix
    keep = 1 - rows[:, 2:] if mixup else rows[:, 2:]
    return keep * F.one_hot(rows[:, 0].long(), num_classes) + (1 - keep) * F.one_hot(rows[:, 1].long(), num_classes)


def kornia_augment(entries: list[dict[str, Any]], h: int, w: int, num_classes: int = 10,
                   seed: int = 0) -> Callable[[Batch, int], Batch]:
    """A kornia pipeline as deepfoundry would call it: its sampler seeded per batch, the global RNG untouched."""
    ops = kornia_ops(entries, h, w)
    images_only = [op for op in ops if not isinstance(op, (K.RandomMixUpV2, K.RandomCutMixV2))]
    mixers = [op for op in ops if isinstance(op, (K.RandomMixUpV2, K.RandomCutMixV2))]
    seq = (images_only[0] if len(images_only) == 1 else K.AugmentationSequential(*images_only)) if images_only else None

    def run(batch: Batch, index: int) -> Batch:
        x, y = batch
        cpu = torch.default_generator  # kornia samples on the CPU; torch.manual_seed would cost ~0.25 ms a call
        state = cpu.get_state()
        cpu.manual_seed(seed * 1_000_003 + index)
        try:
            if seq is not None:
                x = seq(x)
            if mixers:
                mixer = mixers[int(torch.randint(len(mixers), ()))]
                x, labels = mixer(x, y)
                y = kornia_soft_targets(labels, num_classes, isinstance(mixer, K.RandomMixUpV2))
        finally:
            cpu.set_state(state)
        return x, y
    return run


def ours_augment(entries: list[dict[str, Any]], num_classes: int = 10, seed: int = 0) -> Callable[[Batch, int], Batch]:
    augment = BatchAugment(entries, num_classes=num_classes, seed=seed)
    return lambda batch, index: augment(batch, epoch=0, index=index)


def flip_by_kornia(rest: list[dict[str, Any]], flips: list[dict[str, Any]], h: int, w: int,
                   ) -> Callable[[Batch, int], Batch]:
    """deepfoundry's pipeline with its flip taken out and kornia's flip run after it (what switching flip alone
    would give: the flip no longer joins the other geometric ops' single resampling)."""
    ours, theirs = ours_augment(rest), kornia_augment(flips, h, w)
    return lambda batch, index: theirs(ours(batch, index), index)


def op_cases(channels: int) -> dict[str, list[dict[str, Any]]]:
    jitter = {"brightness": 0.2, "contrast": 0.2} | ({"saturation": 0.2} if channels == 3 else {})
    cases = {
        "flip": [{"name": "RandomHorizontalFlip", "p": 0.5}],
        "crop (padding 4)": [{"name": "RandomCrop", "padding": 4}],
        "rotation (15 deg)": [{"name": "RandomRotation", "degrees": 15}],
        "affine (10 deg, shift 0.1, zoom 0.9-1.1)": PRESETS["mnist"],
        "colour jitter (0.2" + (" b/c/s)" if channels == 3 else " b/c)"): [{"name": "ColorJitter", **jitter}],
        "colour jitter (0.4 b/c/s, hue 0.1)": [{"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4,
                                               "saturation": 0.4, "hue": 0.1}],
        "erasing (p 0.5)": [{"name": "RandomErasing", "p": 0.5}],
        "MixUp (alpha 1)": [{"name": "MixUp", "alpha": 1.0}],
        "CutMix (alpha 1)": [{"name": "CutMix", "alpha": 1.0}],
    }
    if channels == 1:  # saturation and hue need colour
        del cases["colour jitter (0.4 b/c/s, hue 0.1)"]
    presets = ["mnist"] if channels == 1 else ["cifar", "standard", "strong"]
    return cases | {f"preset {p}": PRESETS[p] for p in presets}


def time_pair(fns: dict[str, Callable[[Batch, int], Batch]], x: torch.Tensor, y: torch.Tensor, batch_size: int,
              steps: int, repeats: int) -> dict[str, float]:
    """Median images/s of each function over ``repeats`` passes of ``steps`` batches, passes interleaved
    (ABAB...), and the median over passes of each one's ratio to the first's pass just before it
    (``ratio/<name>``): a ratio of neighbours in time, robust to load that changes during the run."""
    batches = [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]
    for fn in fns.values():  # warm-up
        fn(batches[0], 0)
        fn(batches[-1], 1)
    seen: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            for b, batch in enumerate(batches):
                fn(batch, r * steps + b)
            seen[name].append(steps * batch_size / (time.perf_counter() - started))
    first = next(iter(fns))
    out = {k: statistics.median(v) for k, v in seen.items()}
    return out | {f"ratio/{k}": statistics.median(a / b for a, b in zip(v, seen[first])) for k, v in seen.items()}


# ----------------------------------------------------------------------------------------------- 3. equivalence
def equivalence(x: torch.Tensor, y: torch.Tensor) -> list[dict[str, Any]]:
    """kornia given parameters drawn exactly as deepfoundry draws them (np.random.default_rng([seed, epoch,
    index]), the draws in the order of data/augment.py): max |ours - kornia|."""
    n, c, h, w = x.shape
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    rows = []

    def compare(name: str, entries: list[dict[str, Any]], params: Callable[[np.random.Generator, dict], None],
                note: str) -> None:
        ours_x, _ = BatchAugment(entries, num_classes=10, seed=0)((x, y), epoch=0, index=0)
        op = kornia_ops(entries, h, w)[0]
        p = op.forward_parameters((n, c, h, w))
        params(np.random.default_rng([0, 0, 0]), p)
        out = op(x, y, params=p)[0] if isinstance(op, K.RandomMixUpV2) else op(x, params=p)
        rows.append({"op": name, "max_abs_diff": float((ours_x - out).abs().max()), "note": note})

    def flip(rng, p):
        p["batch_prob"] = torch.as_tensor(rng.random(n) < 0.5)

    def crop(rng, p):  # ours: output column j reads input column j - t; kornia: a box at x0 = padding - t
        x0, y0 = 4 - rng.integers(-4, 5, n), 4 - rng.integers(-4, 5, n)
        corners = [(x0, y0), (x0 + w - 1, y0), (x0 + w - 1, y0 + h - 1), (x0, y0 + h - 1)]
        p["src"] = f32(np.stack([np.stack(xy, 1) for xy in corners], 1))

    def rotation(rng, p):
        p["degrees"] = f32(rng.uniform(-15, 15, n))

    def affine(rng, p):
        angle, zoom = rng.uniform(-10, 10, n), rng.uniform(0.9, 1.1, n)
        tx, ty = rng.uniform(-1, 1, n) * 0.1 * w, rng.uniform(-1, 1, n) * 0.1 * h
        p.update(angle=-f32(angle), scale=f32(np.stack([zoom, zoom], 1)), translations=f32(np.stack([tx, ty], 1)),
                 shear_x=torch.zeros(n), shear_y=torch.zeros(n))

    def jitter(rng, p):
        b, con, s, hue = (rng.uniform(lo, hi, n) for lo, hi in [(0.6, 1.4)] * 3 + [(-0.1, 0.1)])
        p.update(brightness_factor=f32(b), contrast_factor=f32(con), saturation_factor=f32(s), hue_factor=f32(hue))

    def erasing(rng, p):
        area = rng.uniform(0.02, 0.33, n) * h * w
        r = np.exp(rng.uniform(math.log(0.3), math.log(3.3), n))
        eh = np.clip(np.round(np.sqrt(area * r)), 1, h)
        ew = np.clip(np.round(np.sqrt(area / r)), 1, w)
        top, left = np.floor(rng.random(n) * (h - eh + 1)), np.floor(rng.random(n) * (w - ew + 1))
        p.update(heights=f32(eh), widths=f32(ew), ys=f32(top), xs=f32(left), values=torch.zeros(n),
                 batch_prob=torch.as_tensor(rng.random(n) < 0.5))

    def mixup(rng, p):  # ours: one lam per batch, image i mixed with i - 1 (roll(1))
        rng.integers(1)  # which mixer
        p.update(mixup_pairs=(torch.arange(n) - 1) % n, mixup_lambdas=torch.full((n,), 1 - rng.beta(1.0, 1.0)))

    cases = op_cases(c)
    compare("flip", cases["flip"], flip, "exact")
    compare("crop (padding 4)", cases["crop (padding 4)"], crop, "exact")
    compare("rotation (15 deg)", cases["rotation (15 deg)"], rotation,
            "same bilinear, zeros fill; align_corners=False as ours (kornia's default True moves it < 1e-5 here)")
    compare("affine (10 deg, shift 0.1, zoom 0.9-1.1)", cases["affine (10 deg, shift 0.1, zoom 0.9-1.1)"], affine,
            "same bilinear, zeros fill, centre; kornia's RandomAffine angle parameter has the opposite sign")
    compare("colour jitter (0.4 b/c/s, hue 0.1)", cases["colour jitter (0.4 b/c/s, hue 0.1)"], jitter,
            "with kornia's order fixed to b, c, s, h (its default shuffles the order per call, as torchvision)")
    compare("erasing (p 0.5)", cases["erasing (p 0.5)"], erasing, "exact")
    compare("MixUp (alpha 1)", cases["MixUp (alpha 1)"], mixup,
            "only when kornia is given ours' pairs and lam; its own sampler: lam per image, random pairs")
    rows.append({"op": "CutMix (alpha 1)", "max_abs_diff": "-",
                 "note": "not compared: kornia draws a box and a partner per image, ours one box per batch, roll(1)"})
    return rows


# ----------------------------------------------------------------------------------------------- main
def load_images(data: Path, channels: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    if channels == 1:
        images = read_idx(next(data.rglob("t10k-images-idx3-ubyte*")))[:count, None]
        labels = read_idx(next(data.rglob("t10k-labels-idx1-ubyte*")))[:count]
    else:
        images, labels = read_cifar_batch(next(data.rglob("data_batch_1.bin")))
        images, labels = images[:count], labels[:count]
    return np.ascontiguousarray(images), labels.astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar", default=str(SHARED / "datasets" / "cifar10-jpeg"))
    ap.add_argument("--mnist", default=str(SHARED / "datasets" / "mnist-t10k"))
    ap.add_argument("--images", type=int, default=10000, help="CIFAR images for the pipeline-vs-PIL part")
    ap.add_argument("--batch-size", type=int, default=256, help="batch of the pipeline-vs-PIL part")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256], help="batches of the op-by-op part")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--steps", type=int, default=4, help="batches per timed pass (op by op)")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved passes per op (median kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on shared cores)")
    ap.add_argument("--quick", action="store_true", help="2,000 PIL images, workers 0, 5 passes of 2 batches")
    args = ap.parse_args()
    if args.quick:
        args.images, args.workers, args.repeats, args.steps = 2000, [0], 5, 2
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(0)

    # 1. the CIFAR pipeline: PIL per sample vs deepfoundry vs kornia on tensors
    images, labels = load_images(Path(args.cifar), 3, args.images)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    pipeline = []
    for w in args.workers:
        ips = max(pil_loader(images, labels, args.batch_size, w) for _ in range(min(args.repeats, 2)))
        pipeline.append({"method": f"per-sample PIL, DataLoader workers={w}", "device": "cpu", "images_per_s": ips})
    for dev in devices:
        for method, fn in [("deepfoundry batch on tensors (per-sample params)", ours_augment(ENTRIES)),
                           ("kornia batch on tensors (per-sample params)", kornia_augment(ENTRIES, 32, 32))]:
            ips = max(tensor_batches(fn, images, labels, args.batch_size, dev) for _ in range(min(args.repeats, 2)))
            pipeline.append({"method": method, "device": str(dev), "images_per_s": ips})
    baseline = max(r["images_per_s"] for r in pipeline if r["method"].startswith("per-sample PIL"))
    for r in pipeline:
        r["ratio_vs_best_pil"] = r["images_per_s"] / baseline
    print_table(pipeline)

    # 2. op by op, deepfoundry vs kornia, interleaved
    ops = []
    for channels, data, kind in [(1, args.mnist, "MNIST 1x28x28"), (3, args.cifar, "CIFAR 3x32x32")]:
        count = max(args.batch_sizes) * args.steps
        imgs, labs = load_images(Path(data), channels, count)
        x, y = torch.from_numpy(imgs.copy()).float() / 255, torch.from_numpy(labs)
        h, w = x.shape[-2:]
        for batch_size in args.batch_sizes:
            for name, entries in op_cases(channels).items():
                fns = {"deepfoundry": ours_augment(entries), "kornia": kornia_augment(entries, h, w)}
                flips = [e for e in entries if e["name"] == "RandomHorizontalFlip"]
                if name.startswith("preset") and flips:  # kornia's flip after deepfoundry's other ops
                    fns["hybrid"] = flip_by_kornia([e for e in entries if e not in flips], flips, h, w)
                ips = time_pair(fns, x, y, batch_size, args.steps, args.repeats)
                ops.append({"op": name, "images": kind, "batch": batch_size, "deepfoundry_per_s": ips["deepfoundry"],
                            "kornia_per_s": ips["kornia"], "kornia_ratio": ips["ratio/kornia"],
                            "flip_by_kornia_ratio": ips.get("ratio/hybrid", "-")})
    print()
    print_table(ops)

    # 3. equivalence under shared parameters (CIFAR images)
    imgs, labs = load_images(Path(args.cifar), 3, 64)
    same = equivalence(torch.from_numpy(imgs.copy()).float() / 255, torch.from_numpy(labs))
    print()
    print_table(same)
    seconds = time.perf_counter() - started
    print(f"threads {torch.get_num_threads()}; kornia {kornia.__version__}; {seconds:.0f} s")
    cpu = {r["method"]: r["images_per_s"] for r in pipeline if r["device"] == "cpu"}
    ours_ips = cpu["deepfoundry batch on tensors (per-sample params)"]
    summary = [summary_row("images/s, CIFAR augmentation pipeline: deepfoundry batch vs per-sample PIL (best workers)",
                           ours_ips, baseline, "torchvision PIL transforms in a DataLoader"),
               summary_row("images/s, CIFAR augmentation pipeline: deepfoundry vs kornia (CPU)", ours_ips,
                           cpu["kornia batch on tensors (per-sample params)"], f"kornia {kornia.__version__}")]
    write_result("augment_throughput", {
        "images": len(images), "batch_size": args.batch_size, "transforms": ENTRIES, "rows": pipeline,
        "ops": ops, "op_batch_sizes": args.batch_sizes, "steps": args.steps, "repeats": args.repeats,
        "threads": args.threads,
        "equivalence": same, "kornia": kornia.__version__, "seconds": round(seconds, 1)},
        quick=args.quick, summary=summary)


if __name__ == "__main__":
    main()
