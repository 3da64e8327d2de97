"""A local directory tree as `openpod cp` and `openpod send` read it: symlinks followed.

scp -r, tar -h and a browser's drag and drop all send what a link points to, under the link's
name; a Hugging Face cache snapshot, say, is nothing but links into ``../../blobs``, and a tool
that skipped links would send an empty folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


class SymlinkLoop(OSError):
    """A symlink to a directory that holds it: following it would never end."""


def nearest_existing(path: Path) -> Path:
    """`path` where it is there, else the nearest directory above it that is (from its
    absolute form): where a copy to `path` lands, for its free space."""
    if path.exists():
        return path
    here = path.absolute()
    while not here.exists() and here.parent != here:
        here = here.parent
    return here


def leads_back(real: str, chain: tuple[str, ...]) -> str | None:
    """The directory of `chain` (real paths: one being walked and those above it) that a
    symlinked directory whose real path is `real` holds or is, or None: walking into such a
    link would come back to where it is (a link to `/` holds everything)."""
    inside = real.rstrip("/") + "/"
    for above in chain:
        if above == real or above.startswith(inside):
            return above
    return None


def walk(top: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk of `top`, top-down, into symlinked directories too. A link to a directory that
    holds the link (see leads_back) raises SymlinkLoop before anything under it is yielded; a
    directory that cannot be listed raises its OSError (os.walk would skip it)."""

    def fail(error: OSError) -> None:
        raise error

    # Each directory still to be visited: the real paths of it and of those above it.
    chains: dict[str, tuple[str, ...]] = {os.fspath(top): (os.path.realpath(top),)}
    for root, dirs, files in os.walk(top, onerror=fail, followlinks=True):
        chain = chains.pop(root)
        for name in dirs:
            path = os.path.join(root, name)
            real = os.path.join(chain[-1], name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                where = leads_back(real, chain)
                if where is not None:
                    raise SymlinkLoop(f"{path}: a symlink loop (it leads back to {where})")
            chains[path] = (*chain, real)
        yield Path(root), dirs, files
