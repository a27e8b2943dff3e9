"""Training images drawn with precomputed sample weights (the official SBD recipe, model.md §6.1).

The official code (RITM lineage, ``isegm/data/base.py``: ``ISDataset._load_samples_scores`` L85-99 and
``__getitem__`` L32-35) reads ``assets/sbd_samples_weights.pkl``, a pickled list of ``(index, image name,
score)`` tuples, turns every score into the weight ``(1 - score) ** gamma`` (gamma 1.25 in the SBD configs),
normalises the weights to probabilities and draws every training item independently, with replacement,
with those probabilities (``np.random.choice(indices, p=probs)``) instead of walking shuffled epochs.

Here the weights are matched to detectron2 dataset dicts by image name (``dataset_dict["image_id"]`` against
the tuple's name, compared as strings; the tuple's index is ignored) by :func:`load_sample_weights`, and
:class:`WeightedTrainingSampler` produces the infinite i.i.d. index stream, seeded and sharded across
processes like detectron2's ``TrainingSampler``.
"""

import itertools
import logging
import math
import os
import pickle
from numbers import Real
from typing import Optional, Sequence

import numpy as np
from detectron2.utils import comm
from torch.utils.data import Sampler

__all__ = ["SAMPLE_WEIGHTS_SOURCE", "load_sample_weights", "resolve_sample_weights_file",
           "WeightedTrainingSampler"]

logger = logging.getLogger(__name__)

#: Where the SBD weights file comes from (shown when it cannot be found).
SAMPLE_WEIGHTS_SOURCE = ("assets/sbd_samples_weights.pkl of RITM (SamsungLabs/ritm_interactive_segmentation) "
                         "or of the official AdaptiveClick code (lab206/AdaptiveClick)")

_SHOWN = 5  # how many names an error message lists


def resolve_sample_weights_file(path: str, datasets_root: Optional[str] = None) -> str:
    """Absolute path of the sample-weights file ``path`` (DATALOADER.SAMPLE_WEIGHTS.FILE).

    An absolute path is used as is; a relative one is looked up from the working directory first, then under
    ``datasets_root`` (default: :func:`adaptiveclick.data.datasets.common.datasets_root`).  Raises
    :class:`FileNotFoundError` listing the paths tried.
    """
    if not path:
        raise ValueError("no sample-weights file given (DATALOADER.SAMPLE_WEIGHTS.FILE is empty)")
    path = os.path.expanduser(os.fspath(path))
    if os.path.isabs(path):
        tried = [path]
    else:
        if datasets_root is None:
            from .datasets.common import datasets_root as default_root

            datasets_root = default_root()
        tried = [os.path.abspath(path), os.path.abspath(os.path.join(datasets_root, path))]
    for candidate in tried:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"sample-weights file {path!r} (DATALOADER.SAMPLE_WEIGHTS.FILE) not found; tried: {', '.join(tried)}. "
        f"For SBD it is {SAMPLE_WEIGHTS_SOURCE}: copy it there (e.g. to <datasets root>/SBD/), or set "
        f'DATALOADER.SAMPLE_WEIGHTS.FILE "" to sample the training images uniformly.')


def _read_entries(path: str) -> list:
    """The validated ``(name, score)`` pairs of the pickled weights file ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sample-weights file {path} does not exist ({SAMPLE_WEIGHTS_SOURCE})")
    # unpickling runs code from the file: only use trusted files (RITM's / the official one)
    with open(path, "rb") as f:
        data = pickle.load(f)
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"sample-weights file {path}: expected a list of (index, image name, score) tuples, "
                         f"got {type(data).__name__}")
    if not data:
        raise ValueError(f"sample-weights file {path}: the list of (index, image name, score) tuples is empty")
    entries = []
    for i, item in enumerate(data):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"sample-weights file {path}: entry {i} is {item!r}, expected a 3-tuple "
                             f"(index, image name, score)")
        name, score = item[1], item[2]
        if isinstance(score, (bool, np.bool_)) or not isinstance(score, (Real, np.number)):
            raise ValueError(f"sample-weights file {path}: entry {i} ({name!r}) has a non-numeric score {score!r}")
        score = float(score)
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise ValueError(f"sample-weights file {path}: entry {i} ({name!r}) has score {score}, expected a "
                             f"finite value in [0, 1]")
        entries.append((str(name), score))
    return entries


def load_sample_weights(path: str, dataset_dicts: Sequence[dict], gamma: float) -> np.ndarray:
    """Sampling probabilities of ``dataset_dicts`` from the RITM weights file ``path``.

    Image ``i`` gets ``(1 - score) ** gamma`` of the file's entry whose name equals ``str(image_id)``; the
    weights are normalised to sum 1 (float64, aligned with ``dataset_dicts``).  Entries of images that are not
    in the dataset are skipped; every dataset image must have an entry.
    """
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"sample-weights gamma (DATALOADER.SAMPLE_WEIGHTS.GAMMA) must be a finite value >= 0, "
                         f"got {gamma}")
    if len(dataset_dicts) == 0:
        raise ValueError(f"sample-weights file {path}: the dataset is empty")
    entries = _read_entries(path)

    scores = {}
    duplicates = []
    for name, score in entries:
        if name in scores:
            duplicates.append(name)
        scores[name] = score
    if duplicates:
        raise ValueError(f"sample-weights file {path}: {len(duplicates)} duplicate image name(s), e.g. "
                         f"{sorted(set(duplicates))[:_SHOWN]}")

    names = [str(d["image_id"]) for d in dataset_dicts]
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"sample-weights file {path}: {len(missing)} of the {len(names)} dataset images have no "
                         f"entry, e.g. {missing[:_SHOWN]} (is it the weights file of this dataset?)")
    unused = len(scores) - len(set(names))
    if unused:
        logger.info(f"sample-weights file {path}: {unused} of its {len(scores)} entries are not in the dataset "
                    f"(ignored)")

    weights = (1.0 - np.array([scores[n] for n in names], dtype=np.float64)) ** gamma
    total = weights.sum()
    if not total > 0:
        raise ValueError(f"sample-weights file {path}: every weight (1 - score) ** {gamma} of the "
                         f"{len(names)} dataset images is zero (all scores are 1)")
    return weights / total


class WeightedTrainingSampler(Sampler):
    """Infinite stream of dataset indices drawn i.i.d., with replacement, with probabilities ``weights``.

    Like detectron2's ``TrainingSampler``: ``seed`` None uses :func:`detectron2.utils.comm.shared_random_seed`
    (all processes must construct the sampler), and process ``rank`` of ``world_size`` yields
    ``stream[rank::world_size]`` of the one seeded stream, so the processes together draw that stream.
    """

    #: indices drawn per call of the generator
    CHUNK = 4096

    def __init__(self, weights, seed: Optional[int] = None):
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0:
            raise ValueError(f"WeightedTrainingSampler: weights must be a non-empty 1-D array, got shape "
                             f"{weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("WeightedTrainingSampler: weights must be finite and >= 0")
        total = weights.sum()
        if not total > 0:
            raise ValueError("WeightedTrainingSampler: the weights sum to zero")
        self._probs = weights / total
        if seed is None:
            seed = comm.shared_random_seed()
        self._seed = int(seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    @property
    def probabilities(self) -> np.ndarray:
        """The normalised sampling probabilities."""
        return self._probs

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        rng = np.random.default_rng(self._seed)
        n = self._probs.size
        while True:
            yield from rng.choice(n, size=self.CHUNK, replace=True, p=self._probs).tolist()
