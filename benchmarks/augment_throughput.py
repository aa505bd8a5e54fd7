"""Augmentation throughput: deepfoundry's batch augmentation on tensors (data/augment.py, per-sample
random parameters, one grid_sample per batch) beside the usual per-sample PIL pipeline
(torchvision.transforms.v2 on PIL images inside a torch DataLoader), same transforms, same CIFAR-10
images, in the same run.

Transforms (both sides): RandomCrop(32, padding=4), RandomHorizontalFlip(0.5),
ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2). The PIL side ends with ToImage +
ToDtype(float32, scale=True) and is collated into batches by the DataLoader (the work a training
loop waits for); the tensor side starts from the uint8 batch already in memory (on the device).
Images/s counts augmented images delivered as float batches of --batch-size.

usage: python benchmarks/augment_throughput.py [--data DIR] [--images 10000] [--batch-size 256] [--workers 0 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from _common import SHARED, print_table, write_result
from deepfoundry.data.augment import BatchAugment
from deepfoundry.data.images import read_cifar_batch

ENTRIES = [{"name": "RandomCrop", "padding": 4}, {"name": "RandomHorizontalFlip", "p": 0.5},
           {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}]


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


def tensor_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device) -> float:
    x_all = torch.from_numpy(images).to(device)
    y_all = torch.from_numpy(labels).to(device)
    augment = BatchAugment(ENTRIES, num_classes=10, seed=0)
    augment((x_all[:batch_size].float() / 255, y_all[:batch_size]))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    n = 0
    perm = torch.randperm(len(x_all), device=device)
    for b, i in enumerate(range(0, len(x_all), batch_size)):
        idx = perm[i:i + batch_size]
        x, _ = augment((x_all[idx].float() / 255, y_all[idx]), epoch=0, index=b)
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED / "datasets" / "cifar10-jpeg"))
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from pathlib import Path

    path = next(Path(args.data).rglob("data_batch_1.bin"))
    images, labels = read_cifar_batch(path)
    images, labels = images[:args.images], labels[:args.images]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    best = {}
    for w in args.workers:
        ips = max(pil_loader(images, labels, args.batch_size, w) for _ in range(args.repeats))
        best[f"pil_w{w}"] = ips
        rows.append({"method": f"per-sample PIL, DataLoader workers={w}", "device": "cpu", "images_per_s": ips})
    baseline = max(best.values())
    for dev in devices:
        ips = max(tensor_batches(images, labels, args.batch_size, dev) for _ in range(args.repeats))
        rows.append({"method": "deepfoundry batch on tensors (per-sample params)", "device": str(dev),
                     "images_per_s": ips})
    for r in rows:
        r["ratio_vs_best_pil"] = r["images_per_s"] / baseline
    print_table(rows)
    print(f"threads {torch.get_num_threads()}; {len(images)} CIFAR-10 images, batch {args.batch_size}")
    write_result("augment_throughput", {"images": len(images), "batch_size": args.batch_size, "transforms": ENTRIES,
                                        "rows": rows})


if __name__ == "__main__":
    main()
