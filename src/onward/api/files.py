"""The caller's workspace over HTTP: list, upload, download, delete — confined like the tools.

Every path is workspace-relative; a path that leads outside (through `..` or a symlink) is 404,
like any resource that is not the caller's. Uploads have their own size limit (max_upload_bytes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import StreamingResponse

from onward.api.deps import Svc, User
from onward.errors import BadRequest

router = APIRouter(prefix="/api/files", tags=["files"])

_PATH = Query("", max_length=4096, description="Workspace-relative path ('' is the workspace itself).")


@router.get("")
async def list_files(svc: Svc, user: User, path: str = _PATH) -> dict[str, Any]:
    """The entries of a directory: `{path, entries: [{name, path, type, size, modified, symlink}], truncated}`."""
    return await asyncio.to_thread(svc.workspaces.list, user.id, path)


@router.get("/download")
async def download(svc: Svc, user: User, path: str = _PATH) -> StreamingResponse:
    name, size, handle = await asyncio.to_thread(svc.workspaces.open_file, user.id, path)

    def chunks(f: IO[bytes]) -> Iterator[bytes]:
        with f:
            while chunk := f.read(256 * 1024):
                yield chunk

    disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    return StreamingResponse(
        chunks(handle),
        media_type="application/octet-stream",
        headers={"Content-Disposition": disposition, "Content-Length": str(size), "X-Content-Type-Options": "nosniff"},
    )


@router.post("/upload", status_code=201)
async def upload(svc: Svc, user: User, path: str = _PATH, file: UploadFile = File(...)) -> dict[str, Any]:
    """Store the multipart field `file` in directory `path` under its (sanitized) file name."""
    if not file.filename:
        raise BadRequest("the uploaded file has no name")
    try:
        return await asyncio.to_thread(svc.workspaces.save, user.id, path, file.filename, file.file)
    finally:
        await file.close()


@router.delete("", status_code=204)
async def delete(svc: Svc, user: User, path: str = _PATH) -> None:
    """Delete a file, a symlink or a directory with everything in it."""
    await asyncio.to_thread(svc.workspaces.delete, user.id, path)
