"""What a refused command must leave as it was: the digest of every file and folder under a
directory (hidden ones, temporary files and empty folders included)."""

import hashlib
import os
from pathlib import Path


def tree_digest(root: str | os.PathLike) -> dict[str, str]:
    """``{path relative to root: sha256 of its bytes}`` for every file, ``"folder"`` for every
    folder and ``"link -> target"`` for every symlink under ``root``."""
    root = Path(root)
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[name] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[name] = "folder"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
