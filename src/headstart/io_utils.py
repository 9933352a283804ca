"""Atomic writes: a file is either the old one or the complete new one, never half written."""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable


def umask_mode(mode: int) -> int:
    """`mode` less the process's umask: what open() and mkdir() would give. mkstemp and mkdtemp create private (0600,
    0700) files and folders, which a server running as another user could not read."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def temporary_folder(beside: Path) -> Path:
    """A new hidden folder next to `beside`, to fill and then rename onto it (the umask's permissions)."""
    tmp = Path(tempfile.mkdtemp(dir=beside.parent, prefix=f".{beside.name}."))
    os.chmod(tmp, umask_mode(0o777))
    return tmp


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)`, then rename over `path` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def slug(given) -> str:
    """A file-name-safe tail of what was given (eval-<slug>, monitor-<slug>-<time>, confusion_matrix_<target>.png)."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(given)).strip('_')[-60:]
