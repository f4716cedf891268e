"""Every path a tool touches is workspace-relative and checked here, after following symlinks.

Commands can create symlinks, so a lexical check is not enough: the path is resolved through every
symlink along it (dangling ones included) and must still land inside the workspace. Escapes are
ToolErrors, which the registry turns into error results the model can read.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from onward.tools.base import ToolError

_HINT = "paths are relative to the workspace root, e.g. 'src/main.py' or '.'"


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_in_workspace(workspace: Path, rel: str) -> Path:
    """The real path `rel` names inside `workspace`; ToolError if it is absolute or escapes it.

    "" and "." name the workspace itself. The returned path has every symlink resolved, so the
    caller operates on what was checked (short of a race with a command changing the tree).
    """
    if "\x00" in rel:
        raise ToolError(f"path {rel!r} contains a NUL byte; {_HINT}")
    root = workspace.resolve()
    if rel.strip() in ("", "."):
        return root
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise ToolError(f"path {rel!r} is absolute; {_HINT}")
    lexical = Path(os.path.normpath(root / pure))
    if not _inside(lexical, root):
        raise ToolError(f"path {rel!r} leads outside the workspace through '..'; {_HINT}")
    resolved = Path(os.path.realpath(root / pure))
    if _inside(resolved, root):
        return resolved
    raise ToolError(f"{_symlink_culprit(root, pure, rel)}; {_HINT}")


def _symlink_culprit(root: Path, pure: PurePosixPath, rel: str) -> str:
    """Names the first symlink along `pure` that points outside `root`, for a useful message."""
    current = root
    for i, part in enumerate(pure.parts, start=1):
        current = current / part
        if current.is_symlink() and not _inside(Path(os.path.realpath(current)), root):
            shown = "/".join(pure.parts[:i])
            return f"path {rel!r} goes through the symbolic link '{shown}', which points outside the workspace"
    return f"path {rel!r} resolves to a location outside the workspace"
