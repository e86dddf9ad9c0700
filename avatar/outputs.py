"""Output paths that are safe to write: never one of the command's own inputs."""
from __future__ import annotations

import os
from pathlib import Path


class OutputIsInputError(ValueError):
    """The output path names an input file (the same file, a hard link to it, or a symlink to it)."""


def check_not_an_input(output: str | Path, *inputs: str | Path | None) -> None:
    """Raise OutputIsInputError when writing `output` would overwrite one of `inputs`.

    Compared by the files themselves (device and inode, symlinks followed), not by their names, so
    `./a.wav`, an absolute path, a hard link and a symlink to the input are all caught."""
    for given in inputs:
        if given is None:
            continue
        try:
            same = os.path.samefile(output, given)
        except OSError:  # either one does not exist: nothing there to overwrite
            continue
        if same:
            raise OutputIsInputError(f"the output {output} is the input file {given}; writing it would destroy "
                                     "the input. Choose another output name.")
