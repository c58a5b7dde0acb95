"""Data sets for the two tasks: synthesized keywords, Fashion-MNIST, and loaders
for the real Speech Commands v2 and CIFAR-10 layouts."""

from knowcache.data.dataset import Dataset, Split, cache_dir  # noqa: F401
