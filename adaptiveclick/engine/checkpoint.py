"""Atomic checkpoints: a checkpoint file and the ``last_checkpoint`` tag only ever appear complete.

Each file is written to a hidden temporary file in the same folder (``.<name>.<random>.tmp``), flushed and
fsync'ed, then moved over the final name with ``os.replace`` (atomic on POSIX and Windows within one file
system).  A process killed mid-write leaves at most a stray temporary file, which never carries a
checkpoint name, is never listed as a checkpoint and is removed by :meth:`AtomicCheckpointer.remove_stale_temp_files`;
the previous checkpoint and the tag naming it stay intact.  The tag is updated only after its checkpoint is
in place, so it never names a missing or partial file.
"""

import glob
import os
import tempfile
from typing import Callable, List

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["atomic_write", "AtomicCheckpointer", "CheckpointError", "TEMP_SUFFIX"]

TEMP_SUFFIX = ".tmp"


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
    """A checkpoint file that cannot be read (empty, truncated, not a checkpoint)."""


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose ``save`` and ``tag_last_checkpoint`` are atomic (see the module doc).

    Same constructor and loading behaviour as detectron2's (``resume_or_load``, ``has_checkpoint``, model
    conversion), except that an unreadable file raises :class:`CheckpointError` naming it (detectron2 lets
    the unpickler's bare ``EOFError`` / ``UnpicklingError`` through); ``save_dir`` must be a local folder.
    """

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
