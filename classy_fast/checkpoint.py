"""Checkpoint files: written atomically, read with ``weights_only=True``, errors that name the file.

A checkpoint is one nested dict of tensors and plain Python values (no pickled objects), so it
loads under ``torch.load(weights_only=True)``. Writing goes to a temporary file in the same
directory, fsynced, then renamed over the target: a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch

CHECKPOINT_FORMAT = "classy_fast.checkpoint.v1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to classy_fast; the message names the file."""


def save_atomic(state: Dict[str, Any], path: str) -> None:
    """torch.save ``state`` to ``path`` via a temp file + fsync + rename (never a half-written ``path``).
    A failed write (full disk, no permission, a file where the directory should be) is a CheckpointError
    naming the path; the previous file at ``path`` stays intact."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=directory)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make last.pt unlike the other outputs
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, CheckpointError):
            # torch reports a full disk as a RuntimeError from its zip writer ("unexpected pos ...").
            raise CheckpointError(f"cannot write checkpoint {path}: {type(e).__name__}: "
                                  f"{(str(e).splitlines() or [''])[0][:200]}") from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a classy_fast checkpoint; a missing, truncated or foreign file is a CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt zip/pickle data
        first_line = (str(e).splitlines() or ["empty or truncated file"])[0][:200]  # EOFError has no message
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first_line})") from None
    if not isinstance(state, dict) or not str(state.get("format", "")).startswith("classy_fast.checkpoint"):
        raise CheckpointError(f"{path}: not a classy_fast checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: a checkpoint of format '{state['format']}', this classy_fast reads "
                              f"'{CHECKPOINT_FORMAT}'")
    return state


def find_resume_checkpoint(resume: Optional[str], output_dir: str) -> Optional[str]:
    """'auto' → OUTPUT/checkpoints/last.pt if it exists (else None: start fresh); a path → that path."""
    if not resume:
        return None
    if resume == "auto":
        path = os.path.join(output_dir, "checkpoints", "last.pt")
        return path if os.path.isfile(path) else None
    if not os.path.isfile(resume):
        raise CheckpointError(f"--resume: checkpoint not found: {resume}")
    return resume


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> Dict[str, Any]:
    """Every global generator's state as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore ``rng_state()``; the state tensors may have been loaded onto a GPU (map_location): they go back to the CPU."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
