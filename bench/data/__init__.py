"""Datasets as numpy arrays: the same arrays for every library, preprocessing fitted on train only.

`load(dataset_config)` -> RawDataset (raw features, integer labels, which columns are categorical);
`split(raw, seed_split, test_size)` -> Split (preprocessed float32 arrays, test rows in a fixed
order), `split_many` the same for many seeds at once; `epoch_orders` draws the shared batch order. Nothing here imports a training library.
"""

from bench.data.datasets import RawDataset, load
from bench.data.order import epoch_orders
from bench.data.split import Split, split, split_many

__all__ = ["RawDataset", "Split", "epoch_orders", "load", "split", "split_many"]
