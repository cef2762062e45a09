"""Write scikit-learn's handwritten digits (shipped offline: 1,797 images, 8x8, 16 grey levels) as
PNG image folders for the digits transfer example:

    OUT/source/{train,validation,test}/{0..4}/NNNN.png   digits 0-4: the source task
    OUT/target/{train,validation,test}/{5..9}/NNNN.png   digits 5-9: the target task

Each digit class is split 70/15/15 (seeded, stratified). Images are upscaled (bilinear) to
--size pixels and stored greyscale; the model reads them as RGB.

    python scripts/make_digits.py                  # -> data/digits/
    python scripts/make_digits.py /tmp/digits --seed 1
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

SOURCE_DIGITS = (0, 1, 2, 3, 4)
TARGET_DIGITS = (5, 6, 7, 8, 9)
FRACTIONS = {"train": 0.70, "validation": 0.15}  # test: the rest


def make(out: Path, seed: int = 0, size: int = 16) -> dict[str, dict[str, int]]:
    """Write the two datasets under ``out`` (replacing them); returns the image counts."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    for name, classes in (("source", SOURCE_DIGITS), ("target", TARGET_DIGITS)):
        root = out / name
        if root.exists():
            shutil.rmtree(root)
        counts[name] = {"train": 0, "validation": 0, "test": 0}
        for digit in classes:
            idx = np.flatnonzero(digits.target == digit)
            rng.shuffle(idx)
            n_train = int(round(FRACTIONS["train"] * len(idx)))
            n_val = int(round(FRACTIONS["validation"] * len(idx)))
            parts = {"train": idx[:n_train], "validation": idx[n_train:n_train + n_val],
                     "test": idx[n_train + n_val:]}
            for split, members in parts.items():
                folder = root / split / str(digit)
                folder.mkdir(parents=True, exist_ok=True)
                for i in sorted(members.tolist()):
                    image = Image.fromarray(images[i])  # uint8 2-D: greyscale
                    image.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.png")
                counts[name][split] += len(members)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="data/digits", help="output folder (default data/digits)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/validation/test split")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels (default 16)")
    args = parser.parse_args()
    counts = make(Path(args.out), args.seed, args.size)
    for name, splits in counts.items():
        print(f"{args.out}/{name}: " + ", ".join(f"{split} {n}" for split, n in splits.items()))


if __name__ == "__main__":
    main()
