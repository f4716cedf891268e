"""Each user's workspace under `$ONWARD_HOME/workspaces/<user id>`, and the file API's operations on it.

Paths are confined exactly like the tools' (`tools.paths.resolve_in_workspace`: symlinks followed,
the result must stay inside), and then opened component by component with O_NOFOLLOW relative to
the workspace's directory descriptor, so a command that swaps a directory for a symlink between
the check and the use makes the request fail instead of escaping. Anything outside the workspace
is "not found": the API never says whether it exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from onward.config import Settings
from onward.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from onward.tools.base import ToolError
from onward.tools.paths import resolve_in_workspace

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024


def clean_filename(name: str) -> str:
    """An uploaded file's name, reduced to one safe path component, or BadRequest."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base).strip()
    if base in ("", ".", ".."):
        raise BadRequest(f"invalid file name {name!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in base):
        raise BadRequest(f"the file name {name!r} contains control characters")
    if len(base.encode("utf-8", "surrogatepass")) > 255:
        raise BadRequest("the file name is longer than 255 bytes")
    return base


class Workspaces:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.workspaces_dir

    def path(self, user_id: str) -> Path:
        path = self.root / user_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    # confinement -------------------------------------------------------------------------------

    def _resolve(self, user_id: str, rel: str) -> tuple[Path, Path]:
        """(workspace root, the real path `rel` names inside it); NotFound if it leads outside."""
        root = self.path(user_id).resolve()
        try:
            return root, resolve_in_workspace(root, rel)
        except ToolError as exc:
            raise NotFound(f"no {rel!r} in your workspace ({exc})") from exc

    @contextlib.contextmanager
    def _open_dir(self, root: Path, real: Path, rel: str) -> Iterator[int]:
        """A descriptor of directory `real`, reached from `root` without following any symlink."""
        fd = os.open(root, _DIR_FLAGS)
        try:
            for part in real.relative_to(root).parts:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise NotFound(f"no directory {rel!r} in your workspace") from exc
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _relative(root: Path, path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        return "" if rel == "." else rel

    # operations ----------------------------------------------------------------------------------

    def list(self, user_id: str, rel: str) -> dict[str, Any]:
        root, real = self._resolve(user_id, rel)
        limit = self.settings.files_list_limit
        entries: list[dict[str, Any]] = []
        truncated = False
        with self._open_dir(root, real, rel) as fd, os.scandir(fd) as it:
            for entry in it:
                if len(entries) >= limit:
                    truncated = True
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                entries.append({
                    "name": entry.name,
                    "type": "dir" if is_dir else "file",
                    "size": 0 if is_dir else st.st_size,
                    "modified": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
                    "symlink": stat.S_ISLNK(st.st_mode),
                })
        entries.sort(key=lambda e: (e["type"] != "dir", e["name"]))
        here = self._relative(root, real)
        for e in entries:
            e["path"] = f"{here}/{e['name']}" if here else e["name"]
        return {"path": here, "entries": entries, "truncated": truncated}

    def open_file(self, user_id: str, rel: str) -> tuple[str, int, IO[bytes]]:
        """(name, size, open binary file) of a regular file in the workspace."""
        root, real = self._resolve(user_id, rel)
        if real == root:
            raise BadRequest("the workspace itself is a directory; name a file")
        with self._open_dir(root, real.parent, rel) as dir_fd:
            try:
                fd = os.open(real.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                raise NotFound(f"no file {rel!r} in your workspace") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotFound(f"{rel!r} is not a file")
        return real.name, st.st_size, os.fdopen(fd, "rb")

    def save(self, user_id: str, rel_dir: str, filename: str, data: IO[bytes]) -> dict[str, Any]:
        """Write `data` as `filename` in directory `rel_dir` (replacing a file of that name)."""
        name = clean_filename(filename)
        limit = self.settings.max_upload_bytes
        root, real = self._resolve(user_id, rel_dir)
        with self._open_dir(root, real, rel_dir) as dir_fd:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise Conflict(f"{name!r} is a directory")
            except FileNotFoundError:
                pass
            tmp = f".{name[:200]}.{os.urandom(6).hex()}.upload"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
            size = 0
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := data.read(_CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise PayloadTooLarge(f"the file is larger than {limit} bytes (max_upload_bytes)")
                        out.write(chunk)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        return {"path": self._relative(root, real / name), "size": size}

    def delete(self, user_id: str, rel: str) -> None:
        """Delete a file, a symlink (not what it points to) or a whole directory."""
        root = self.path(user_id).resolve()
        if "\x00" in rel:
            raise NotFound("no such path in your workspace")
        if rel.strip().strip("/") in ("", "."):
            raise BadRequest("the workspace itself cannot be deleted")
        parent_rel, _, name = rel.strip().rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            raise BadRequest(f"invalid path {rel!r}")
        _, parent = self._resolve(user_id, parent_rel)
        with self._open_dir(root, parent, rel) as dir_fd:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError as exc:
                raise NotFound(f"no {rel!r} in your workspace") from exc
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)

