"""Regenerate classy_fast/data/embedded/fashion_mnist_subset.npz from the official IDX files.

    python tools/make_embedded_fashion_mnist.py /usr/share/datasets/fashion-mnist

A stratified subset (the first N images of each class, in file order): 1,200 per class from the
60k training set and 200 per class from the 10k test set, stored as compressed uint8.
Fashion-MNIST is MIT-licensed (Zalando Research).
"""

import argparse
import os

import numpy as np

from classy_fast.data.idx import read_idx_split


def stratified_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate(picked))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="directory with the Fashion-MNIST IDX files")
    parser.add_argument("--train-per-class", type=int, default=1200)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--out", default=os.path.join("classy_fast", "data", "embedded", "fashion_mnist_subset.npz"))
    args = parser.parse_args()
    xtr, ytr = read_idx_split(args.root, "train")
    xte, yte = read_idx_split(args.root, "test")
    itr = stratified_indices(ytr, args.train_per_class)
    ite = stratified_indices(yte, args.test_per_class)
    np.savez_compressed(args.out, train_images=xtr[itr], train_labels=ytr[itr], test_images=xte[ite], test_labels=yte[ite])
    print(f"wrote {args.out}: {len(itr)} train, {len(ite)} test, {os.path.getsize(args.out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
