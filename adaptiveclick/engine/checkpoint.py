"""Atomic checkpoints: a checkpoint file and the ``last_checkpoint`` tag only ever appear complete.

Each file is written to a hidden temporary file in the same folder (``.<name>.<random>.tmp``), flushed and
fsync'ed, then moved over the final name with ``os.replace`` (atomic on POSIX and Windows within one file
system).  A process killed mid-write leaves at most a stray temporary file, which never carries a
checkpoint name, is never listed as a checkpoint and is removed by :meth:`AtomicCheckpointer.remove_stale_temp_files`;
the previous checkpoint and the tag naming it stay intact.  The tag is updated only after its checkpoint is
in place, so it never names a missing or partial file.

Loading is strict by default: a checkpoint whose parameters do not fit the model (a tensor of another shape,
or a model parameter / buffer the file does not hold) raises :class:`CheckpointError` naming the file and the
keys, instead of fvcore's log line and a model left partly at its random initialisation.  Keys of the file
that the model does not have only give a warning.  ``AtomicCheckpointer(..., strict=False)`` loads what fits
(fine-tuning from a different model; ``tools/train_net.py --partial-weights``).
"""

import glob
import logging
import os
import tempfile
from typing import Callable, List, Optional, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys

__all__ = ["atomic_write", "AtomicCheckpointer", "CheckpointError", "TEMP_SUFFIX", "OPTIONAL_KEYS"]

TEMP_SUFFIX = ".tmp"

# state-dict keys that the model rebuilds from its config, so a checkpoint may lack them (files written by
# other tools): the set criterion's class weights (MODEL.ADAPTIVECLICK.NO_OBJECT_WEIGHT / CLASS_WEIGHTS)
OPTIONAL_KEYS = frozenset({"criterion.empty_weight"})

# keys listed in a message; the count of the others is given
_LISTED_KEYS = 10

logger = logging.getLogger(__name__)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED_KEYS])
    return shown + (f", ... ({len(items) - _LISTED_KEYS} more)" if len(items) > _LISTED_KEYS else "")


def atomic_write(path: str, write: Callable, binary: bool = True) -> None:
    """Create or replace the local file ``path`` with what ``write(file_object)`` writes, atomically.

    The data goes to a temporary file beside ``path`` that is renamed onto ``path`` only after ``write``
    returned and the data reached the disk; on an exception the temporary file is removed and the old
    ``path`` (if any) is untouched.
    """
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        # mkstemp creates the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    # make the rename itself durable (POSIX; directories cannot be opened on Windows)
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (empty, truncated, not a checkpoint), or, when loading strictly,
    whose parameters do not fit the model (other shapes, parameters missing)."""


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose ``save`` and ``tag_last_checkpoint`` are atomic (see the module doc).

    Same constructor and loading behaviour as detectron2's (``resume_or_load``, ``has_checkpoint``, model
    conversion), except that an unreadable file raises :class:`CheckpointError` naming it (detectron2 lets
    the unpickler's bare ``EOFError`` / ``UnpicklingError`` through) and that loading is strict unless
    ``strict=False``; ``save_dir`` must be a local folder.

    Args:
        strict: when True (default), :meth:`load` / :meth:`resume_or_load` raise :class:`CheckpointError`
            (naming the file, the first keys and their count) if a tensor of the file has another shape than
            the model's or a model parameter or buffer is not in the file (:data:`OPTIONAL_KEYS` excepted).
            The error comes after the tensors that fit were copied into the model and before any other
            checkpointable (optimizer, scheduler, ...) is loaded.  When False, as detectron2: those
            parameters keep their current values and are only logged (for fine-tuning from another model).
            Keys of the file that the model lacks give a warning either way.  The attribute ``strict`` can
            be changed between loads.
    """

    def __init__(self, model, save_dir: str = "", *, strict: bool = True, save_to_disk: Optional[bool] = None,
                 **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self._loading: Optional[str] = None  # the file being loaded, for the messages

    def load(self, path, *args, **kwargs):
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None
            # detectron2 resets this only after a successful load; a failed one would block every later load
            self._parsed_url_during_load = None

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        # a parameter shared between modules and loaded under one of its names is not missing (model order kept)
        kept = set(_filter_reused_missing_keys(self.model, incompatible.missing_keys)) - OPTIONAL_KEYS
        missing = [k for k in incompatible.missing_keys if k in kept]
        incompatible = incompatible._replace(missing_keys=missing)
        if self.strict and (missing or incompatible.incorrect_shapes):
            problems = []
            if incompatible.incorrect_shapes:
                shapes = [f"{k} (checkpoint {tuple(c)}, model {tuple(m)})"
                          for k, c, m in incompatible.incorrect_shapes]
                problems.append(f"{len(shapes)} tensor(s) of another shape: {_listing(shapes)}")
            if missing:
                problems.append(f"{len(missing)} model parameter(s)/buffer(s) not in the checkpoint: "
                                f"{_listing(missing)}")
            if incompatible.unexpected_keys:
                problems.append(f"{len(incompatible.unexpected_keys)} checkpoint key(s) unknown to the model: "
                                f"{_listing(incompatible.unexpected_keys)}")
            raise CheckpointError(
                f"checkpoint {self._loading} does not fit the model ({type(self.model).__name__}): "
                + "; ".join(problems) + ". Was it written for another config? (To load only the tensors that "
                "fit, e.g. to fine-tune, use AtomicCheckpointer(..., strict=False) / tools/train_net.py "
                "--partial-weights; MAE ImageNet weights go to MODEL.VIT.PRETRAINED.)")
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        unexpected = list(incompatible.unexpected_keys)
        if unexpected:
            logger.warning(f"checkpoint {self._loading} holds {len(unexpected)} key(s) that the model "
                           f"({type(self.model).__name__}) does not use, ignored: {_listing(unexpected)}")
        skipped = len(incompatible.missing_keys) + len(incompatible.incorrect_shapes)
        if skipped:
            logger.warning(f"loading {self._loading} non-strictly: {skipped} model parameter(s)/buffer(s) keep "
                           "their initial values (listed below)")
        super()._log_incompatible_keys(incompatible._replace(unexpected_keys=[]))

    def _load_file(self, filename: str):
        local = self.path_manager.get_local_path(filename)
        if os.path.isfile(local) and os.path.getsize(local) == 0:
            raise CheckpointError(f"checkpoint {filename} is empty")
        try:
            return super()._load_file(filename)
        except (FileNotFoundError, CheckpointError):
            raise
        except Exception as e:  # noqa: BLE001 -- re-raised with the file name
            raise CheckpointError(f"cannot read checkpoint {filename}: {type(e).__name__}: {e}") from e

    def save(self, name: str, **kwargs) -> None:
        """Write ``<save_dir>/<name>.pth`` (model, every checkpointable, ``kwargs``) and tag it as the last."""
        if not self.save_dir or not self.save_to_disk:
            return
        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"checkpoint name must be a plain file name, got {name!r}")
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        os.makedirs(self.save_dir, exist_ok=True)
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename), binary=False)

    def remove_stale_temp_files(self) -> List[str]:
        """Delete temporary files left in ``save_dir`` by interrupted saves; returns their paths.

        Call it only when no other process is saving into the same folder (e.g. on the main process
        before training starts).
        """
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        folder = glob.escape(self.save_dir)
        stale = sorted(glob.glob(os.path.join(folder, f".*.pth.*{TEMP_SUFFIX}"))
                       + glob.glob(os.path.join(folder, f".last_checkpoint.*{TEMP_SUFFIX}")))
        for path in stale:
            os.remove(path)
        if stale:
            self.logger.warning(f"Removed {len(stale)} temporary file(s) of interrupted checkpoint saves: {stale}")
        return stale
