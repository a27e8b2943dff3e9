"""The training loader: detectron2's batched loader over a sample stream that a resumed run continues.

detectron2's ``build_detection_train_loader`` starts its sampler and the mapper's per-call generators from the
beginning every time a process starts, so a run resumed at iteration s trains iterations s, s+1, ... on the
batches of iterations 0, 1, ... again (same images, augmentations and clicks when ``SEED`` is fixed).  Here the
loader is built from the same parts (``get_detection_dataset_dicts``, a sampler, ``build_batch_data_loader``)
but the per-process stream is :class:`TrainSampleStream`, which can start after the samples an earlier run
already delivered (:meth:`TrainSampleStream.skip`): the resumed run then sees the batches an uninterrupted run
would have seen at the same iterations, and with the trainer's per-iteration seeding it reaches the same
weights (tests/test_train_loader.py checks bit-equality on the CPU).

Order of the stream, as detectron2's ``ToIterableDataset`` + ``DataLoader``: the process's sampler stream is
cut into chunks of its batch size B; DataLoader worker w of W maps chunks w, w + W, w + 2W, ...; the
DataLoader takes from the workers in turn, one unit each: one sample with aspect-ratio grouping (the default;
the loader batches in the main process, and every crop is CROP_SIZE, so batches form in arrival order), one
batch of B without it.  So unit k of the process comes from worker k mod W, and after n delivered units worker
w has delivered ``ceil((n - w) / W)`` of its own.  A resumed loader starts taking from its worker 0 again, so
its worker w plays the part of worker (n + w) mod W of the interrupted run: that worker's chunks, from where
it stopped, with that worker's id in the mapper's generators.  The resumed stream is exactly the continuation
when the number of processes, the batch size per process, ``DATALOADER.NUM_WORKERS`` and
``ASPECT_RATIO_GROUPING`` are the same as before (otherwise it is still a fresh part of the sampler stream, not
a replay).
"""

import itertools
import logging
from typing import Callable, Optional

import numpy as np
import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.build import build_batch_data_loader
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from adaptiveclick.utils.checks import check_int

__all__ = ["TrainSampleStream", "build_train_sampler", "build_click_train_loader", "find_sample_stream"]

logger = logging.getLogger(__name__)


class TrainSampleStream(torch.utils.data.IterableDataset):
    """Mapped training samples of one process, in the order detectron2's batched loader delivers them.

    Args:
        dataset: map-style dataset of dataset dicts (e.g. ``DatasetFromList``; each access returns a copy).
        sampler: infinite per-process index stream (detectron2's ``TrainingSampler`` or
            :class:`~adaptiveclick.data.samplers.WeightedTrainingSampler`).
        mapper: called as ``mapper(dataset_dict, rng=...)``; must have ``call_rng(index, worker)`` (the
            generator of its index-th call in DataLoader worker ``worker``), as
            :class:`~adaptiveclick.data.ClickTrainingMapper`.
        chunk_size: samples per worker chunk: the batch size per process.
        batched_in_workers: whether the DataLoader's workers deliver whole batches (detectron2's loader
            without aspect-ratio grouping) instead of single samples.
    """

    def __init__(self, dataset, sampler, mapper: Callable, chunk_size: int, *, batched_in_workers: bool = False):
        chunk_size = check_int(chunk_size, "chunk_size")
        if not callable(getattr(mapper, "call_rng", None)):
            raise TypeError(f"the mapper ({type(mapper).__name__}) has no call_rng(index, worker) method")
        self.dataset = dataset
        self.sampler = sampler
        self.mapper = mapper
        self.chunk_size = chunk_size
        self.batched_in_workers = bool(batched_in_workers)
        self.start = 0

    def skip(self, num_samples: int) -> None:
        """Start after the first ``num_samples`` samples of the stream (before iterating)."""
        self.start = check_int(num_samples, "num_samples", minimum=0)

    @staticmethod
    def delivered_by_worker(num_units: int, worker: int, num_workers: int) -> int:
        """How many of the first ``num_units`` units (samples or batches) worker ``worker`` of ``num_workers``
        delivered, taken in turn."""
        return max(0, -(-(num_units - worker) // num_workers))

    def _worker_indices(self, worker: int, num_workers: int):
        indices = iter(self.sampler)
        if num_workers == 1:
            return indices
        chunk = self.chunk_size
        return (idx for i, idx in enumerate(indices) if (i // chunk) % num_workers == worker)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        unit = self.chunk_size if self.batched_in_workers else 1
        if self.start % unit:
            raise ValueError(f"cannot start inside a batch: {self.start} samples skipped, batches of {unit}")
        units = self.start // unit
        role = (units + worker) % num_workers  # the worker of the uninterrupted run whose stream this continues
        first = self.delivered_by_worker(units, role, num_workers) * unit
        indices = itertools.islice(self._worker_indices(role, num_workers), first, None)
        for call, idx in enumerate(indices, start=first):
            yield self.mapper(self.dataset[idx], rng=self.mapper.call_rng(call, role))


def build_train_sampler(cfg, dataset_dicts):
    """The per-process index stream for ``dataset_dicts``: i.i.d. with the sample weights of
    ``DATALOADER.SAMPLE_WEIGHTS.FILE`` when it is set (:class:`WeightedTrainingSampler`, the official SBD
    recipe); else i.i.d. uniform with ``DATALOADER.SAMPLE_WITH_REPLACEMENT`` (the official COCO+LVIS recipe);
    else detectron2's ``TrainingSampler`` (shuffled epochs).  All are seeded with ``comm.shared_random_seed()``
    (from ``SEED`` through detectron2's ``seed_all_rng``)."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name != "TrainingSampler":
        # RepeatFactor / RandomSubset weight images by their category annotations: objects here have none
        raise ValueError(f"DATALOADER.SAMPLER_TRAIN must be 'TrainingSampler' (interactive segmentation objects "
                         f"carry no categories to repeat by), got {name!r}; for weighted images use "
                         f"DATALOADER.SAMPLE_WEIGHTS.FILE")
    from .samplers import WeightedTrainingSampler

    weights = cfg.DATALOADER.SAMPLE_WEIGHTS
    if not weights.FILE:
        if cfg.DATALOADER.SAMPLE_WITH_REPLACEMENT:
            logger.info(f"Training images drawn i.i.d. uniformly with replacement ({len(dataset_dicts)} images)")
            return WeightedTrainingSampler(np.ones(len(dataset_dicts)))
        return TrainingSampler(len(dataset_dicts))

    from .datasets.common import datasets_root
    from .samplers import load_sample_weights, resolve_sample_weights_file

    path = resolve_sample_weights_file(weights.FILE, datasets_root(cfg.DATASETS.ROOT or None))
    probs = load_sample_weights(path, dataset_dicts, weights.GAMMA)
    logger.info(f"Training images drawn with sample weights from {path} (gamma {weights.GAMMA}, "
                f"{len(dataset_dicts)} images)")
    return WeightedTrainingSampler(probs)


def build_click_train_loader(cfg, mapper, *, pin_memory: bool = False):
    """detectron2's batched training loader (workers, aspect-ratio grouping, ``IMS_PER_BATCH`` split over the
    processes) over a :class:`TrainSampleStream` of ``DATASETS.TRAIN`` mapped by ``mapper``.  The returned
    loader carries the stream as ``loader.sample_stream`` (:func:`find_sample_stream`)."""
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    if not dicts:
        raise ValueError(f"the training datasets {tuple(cfg.DATASETS.TRAIN)} have no images")
    world = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total < 1 or total % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH ({total}) must be a positive multiple of the number of processes "
                         f"({world})")
    grouping = bool(cfg.DATALOADER.ASPECT_RATIO_GROUPING)
    stream = TrainSampleStream(DatasetFromList(dicts, copy=False), build_train_sampler(cfg, dicts), mapper,
                               total // world, batched_in_workers=not grouping)
    loader = build_batch_data_loader(stream, None, total, aspect_ratio_grouping=grouping,
                                     num_workers=cfg.DATALOADER.NUM_WORKERS, pin_memory=pin_memory)
    loader.sample_stream = stream
    return loader


def find_sample_stream(data_loader) -> Optional[TrainSampleStream]:
    """The :class:`TrainSampleStream` a loader of :func:`build_click_train_loader` carries (None for others)."""
    stream = getattr(data_loader, "sample_stream", None)
    return stream if isinstance(stream, TrainSampleStream) else None
