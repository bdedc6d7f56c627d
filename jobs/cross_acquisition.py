"""Cross-acquisition check: a plain student trained on HAM10000, scored on dermoscopy from other clinics.

Trains a ResNet (the project's ``Classifier``, cross-entropy, Nesterov SGD with
the students' warm-up + cosine schedule) in one process on a lesion-grouped
70/15/15 split of ``--data`` and, after every epoch, scores the HAM validation and
test lesions and the non-HAM images of ``--external`` (by default the 120 BCN, MSK
and unknown images of the shared ISIC 2019 sample). One line per epoch: balanced
accuracy, accuracy and macro-F1, and the NV recall outside HAM, where a model that
learned HAM's colour cast calls the naevi of other cameras melanoma.

It isolates the preprocessing and training options (colour constancy,
augmentation, class weighting) from the teacher and partition, which is how the
``real`` profile's defaults were chosen (docs/results.md). Preprocessed images are
cached per (data, size, colour constancy) under ``--cache``.

    python jobs/cross_acquisition.py --color-constancy shades_of_gray --augment full \
        --imbalance sqrt_weighted_ce --epochs 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skin_core import storage
from skin_core.classes import CLASSES
from skin_core.config import IMBALANCE_MODES, AugmentConfig, PreprocessConfig
from skin_core.data.isic import load_isic
from skin_core.losses.attention_transfer import StudentObjective
from skin_core.metrics.classification import classification_report
from skin_core.models.classifier import Classifier
from skin_core.partitioning.holdout import lesion_holdout
from skin_core.preprocessing.pipeline import preprocess_with
from skin_core.training.schedule import scheduled
from skin_core.training.student import class_weights, predict_probs, train_epoch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AUGMENTS = {
    "flips": AugmentConfig(),
    "full": AugmentConfig(crop_scale=(0.6, 1.0), rotation=180, brightness=0.2, contrast=0.2, saturation=0.2,
                          hue=0.03),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED / "ham10000"), help="training set in the ISIC 2019 layout")
    p.add_argument("--external", default=str(SHARED / "isic2019" / "sample"), help="other acquisitions")
    p.add_argument("--cache", default="runs/cross-acquisition-cache", help="folder for preprocessed arrays")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--color-constancy", default="none", choices=["none", "shades_of_gray"])
    p.add_argument("--augment", default="flips", choices=list(AUGMENTS))
    p.add_argument("--imbalance", default="weighted_ce", choices=list(IMBALANCE_MODES))
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    return p


def preprocessed(root: str, size: int, color_constancy: str, cache: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """uint8 N×size×size×3 images and their manifest rows, from the cache when present."""
    path = cache / f"{Path(root).name}_{size}_{color_constancy}.npz"
    frame = load_isic(root).frame.reset_index(drop=True)
    if path.exists():
        return np.load(path)["x"], frame
    config = PreprocessConfig(size=size, color_constancy=color_constancy)
    images = np.stack([preprocess_with(storage.read_bytes(uri), config, image_id).image
                       for uri, image_id in zip(frame["uri"], frame["image_id"])])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=images)
    return images, frame


def report(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray):
    return classification_report(labels, predict_probs(model, torch.from_numpy(images), "cpu", batch_size=256))


def main() -> int:
    a = parser().parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, frame = preprocessed(a.data, a.size, a.color_constancy, Path(a.cache))
    ex, external = preprocessed(a.external, a.size, a.color_constancy, Path(a.cache))
    y, ey = frame["label_idx"].to_numpy(np.int64), external["label_idx"].to_numpy(np.int64)
    other = (external["origin"] != "HAM").to_numpy()
    test = lesion_holdout(frame["lesion_id"].to_numpy(str), 0.15, salt="test")
    val = lesion_holdout(frame["lesion_id"].to_numpy(str), 0.15 / 0.85, salt="val") & ~test
    train = np.flatnonzero(~test & ~val)
    weights = class_weights(frame.loc[train, "label"], a.imbalance)
    model = Classifier(a.arch, layers=())
    optimizer = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=a.weight_decay, nesterov=True)
    objective = StudentObjective((), beta=0.0, class_weights=torch.tensor(weights) if weights else None)
    steps = len(train) // a.batch
    print(json.dumps(vars(a)), f"train {len(train)} val {val.sum()} test {test.sum()} other {other.sum()}",
          f"NV share of test {(y[test] == CLASSES.index('NV')).mean():.3f}", flush=True)
    start = time.time()
    for epoch in range(a.epochs):
        generator = torch.Generator().manual_seed(a.seed * 1000 + epoch)
        order = train[torch.randperm(len(train), generator=generator).numpy()]
        batches = ((torch.from_numpy(x[b]), torch.from_numpy(y[b]))
                   for b in (order[s * a.batch:(s + 1) * a.batch] for s in range(steps)))
        began = time.time()
        stats = train_epoch(model, scheduled(batches, optimizer, epoch * steps, a.epochs * steps,
                                             a.warmup_epochs * steps, a.lr),
                            objective, optimizer, torch.device("cpu"), generator=generator,
                            augment=AUGMENTS[a.augment])
        rate = steps * a.batch / (time.time() - began)
        rv, rt, ro = report(model, x[val], y[val]), report(model, x[test], y[test]), report(model, ex[other], ey[other])
        print(f"ep {epoch + 1:2d} loss {stats['loss']:.3f} {rate:.0f} img/s | "
              f"val bacc {rv.balanced_accuracy:.3f} acc {rv.accuracy:.3f} f1 {rv.macro_f1:.3f} | "
              f"test bacc {rt.balanced_accuracy:.3f} acc {rt.accuracy:.3f} f1 {rt.macro_f1:.3f} | "
              f"other bacc {ro.balanced_accuracy:.3f} NVrec {ro.recall['NV']:.3f} acc {ro.accuracy:.3f} | "
              f"{time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
