"""resolve_in_workspace: every way out of the workspace is refused, every way inside is allowed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onward.tools.base import ToolError
from onward.tools.paths import resolve_in_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "main.py").write_text("print(1)\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    return workspace


@pytest.mark.parametrize("rel", ["", ".", "  ", "./", "src/.."])
def test_empty_and_dot_name_the_workspace(ws: Path, rel: str) -> None:
    assert resolve_in_workspace(ws, rel) == ws.resolve()


def test_relative_paths_resolve_inside(ws: Path) -> None:
    assert resolve_in_workspace(ws, "src/main.py") == ws / "src" / "main.py"
    assert resolve_in_workspace(ws, "./src//main.py") == ws / "src" / "main.py"
    # Not existing yet is fine: write_file creates files.
    assert resolve_in_workspace(ws, "new/dir/file.txt") == ws / "new" / "dir" / "file.txt"


def test_absolute_path_is_refused(ws: Path) -> None:
    with pytest.raises(ToolError, match=r"absolute.*relative to the workspace"):
        resolve_in_workspace(ws, "/etc/passwd")
    with pytest.raises(ToolError, match="absolute"):
        resolve_in_workspace(ws, str(ws / "src" / "main.py"))


@pytest.mark.parametrize("rel", ["..", "../secret.txt", "src/../../secret.txt", "src/../.."])
def test_dotdot_escape_is_refused(ws: Path, rel: str) -> None:
    with pytest.raises(ToolError, match=r"outside the workspace through '\.\.'"):
        resolve_in_workspace(ws, rel)


def test_nul_byte_is_refused(ws: Path) -> None:
    with pytest.raises(ToolError, match="NUL"):
        resolve_in_workspace(ws, "src/main.py\x00.txt")


def test_symlinked_directory_to_outside_is_refused(ws: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path, ws / "up")
    with pytest.raises(ToolError, match=r"symbolic link 'up'.*outside the workspace"):
        resolve_in_workspace(ws, "up/secret.txt")


def test_symlink_deep_in_the_path_is_refused(ws: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path, ws / "src" / "escape")
    with pytest.raises(ToolError, match="'src/escape'"):
        resolve_in_workspace(ws, "src/escape/secret.txt")


def test_final_component_symlink_to_outside_is_refused(ws: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "secret.txt", ws / "secret")
    with pytest.raises(ToolError, match="outside the workspace"):
        resolve_in_workspace(ws, "secret")


def test_dangling_symlink_to_outside_is_refused(ws: Path, tmp_path: Path) -> None:
    # Writing through it would create a file outside the workspace.
    os.symlink(tmp_path / "does-not-exist-yet.txt", ws / "dangling")
    with pytest.raises(ToolError, match="outside the workspace"):
        resolve_in_workspace(ws, "dangling")
    assert not (tmp_path / "does-not-exist-yet.txt").exists()


def test_symlinks_within_the_workspace_are_followed(ws: Path) -> None:
    os.symlink("src", ws / "alias")
    os.symlink("main.py", ws / "src" / "link.py")
    assert resolve_in_workspace(ws, "alias/main.py") == ws / "src" / "main.py"
    assert resolve_in_workspace(ws, "src/link.py") == ws / "src" / "main.py"


def test_workspace_reached_through_a_symlink(tmp_path: Path, ws: Path) -> None:
    os.symlink(ws, tmp_path / "ws-link")
    assert resolve_in_workspace(tmp_path / "ws-link", "src/main.py") == ws / "src" / "main.py"
    with pytest.raises(ToolError):
        resolve_in_workspace(tmp_path / "ws-link", "../secret.txt")
