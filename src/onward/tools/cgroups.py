"""Per-command cgroups: a process-count and a memory limit for everything one command starts.

Rlimits are per process (memory) or per user (processes, and not at all for root), so they cannot
bound a fork bomb of a server running as root, nor the memory of a command's whole tree. A cgroup
can, where this process may create one: cgroup v1 hierarchies with the `pids` / `memory`
controllers, or a cgroup v2 subtree with them enabled. We make `onward-<pid>` under our own cgroup
in each, one child per command, and a tiny host-side shell wrapper moves the command into it
before it execs bubblewrap. Children are removed once empty (lazily: the Sandbox interface has no
"command ended" hook), and everything at shutdown.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Moves the wrapper itself into each cgroup named on its command line, then becomes the command:
#   sh -c JOIN onward-cgroup N DIR1 … DIRN ARGV…
JOIN_SCRIPT = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'echo $$ > "$1/cgroup.procs" || { echo "onward: cannot enter the cgroup $1" >&2; exit 126; }; '
    'shift; n=$((n-1)); done; exec "$@"'
)
_SWEEP_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class _Controller:
    name: str  # "pids" or "memory"
    parent: Path  # onward-<pid>, created by us
    version: int


def _own_cgroups() -> dict[str, tuple[int, Path]]:
    """Controller name → (cgroup version, the directory of our own cgroup in its hierarchy)."""
    mounts: dict[str, tuple[int, Path, str]] = {}
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    for line in mountinfo:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point, fstype, options = fields[3], fields[4], tail[0], tail[2].split(",")
        if fstype == "cgroup":
            for name in ("pids", "memory"):
                if name in options:
                    mounts[name] = (1, Path(mount_point), mount_root)
        elif fstype == "cgroup2":
            mounts.setdefault("v2", (2, Path(mount_point), mount_root))
    found: dict[str, tuple[int, Path]] = {}
    for line in own:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        names = ["v2"] if hierarchy == "0" and controllers == "" else controllers.split(",")
        for name in names:
            if name not in mounts:
                continue
            version, point, root = mounts[name]
            rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
            where = (point / rel).resolve() if rel != "." else point
            if version == 2:
                for controller in ("pids", "memory"):
                    found.setdefault(controller, (2, where))
            else:
                found[name] = (1, where)
    return found


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def _remove_tree(directory: Path) -> None:
    """rmdir `directory` and its (empty) child cgroups; populated ones stay."""
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.is_dir():
            with contextlib.suppress(OSError):
                child.rmdir()
    with contextlib.suppress(OSError):
        directory.rmdir()


class CommandCgroups:
    def __init__(self, controllers: list[_Controller], max_processes: int, memory_bytes: int) -> None:
        self.controllers = controllers
        self.max_processes = max_processes
        self.memory_bytes = memory_bytes
        self._counter = itertools.count(1)
        self._made: list[tuple[float, list[Path]]] = []

    @property
    def limits(self) -> set[str]:
        """Which of "pids" and "memory" this confines."""
        return {c.name for c in self.controllers}

    @classmethod
    def detect(cls, max_processes: int, memory_bytes: int) -> CommandCgroups | None:
        """The cgroups this process can create children in, or None if it can create none."""
        controllers: list[_Controller] = []
        for name, (version, own) in sorted(_own_cgroups().items()):
            _remove_stale(own)
            parent = own / f"onward-{os.getpid()}"
            limit_file = "pids.max" if name == "pids" else ("memory.max" if version == 2 else "memory.limit_in_bytes")
            try:
                parent.mkdir(exist_ok=True)
            except OSError:
                continue
            if version == 2:  # children get a controller only if the parent delegates it
                _write(parent / "cgroup.subtree_control", f"+{name}")
            probe = parent / "probe"
            try:
                probe.mkdir(exist_ok=True)
                usable = (probe / limit_file).exists()
            except OSError:
                usable = False
            finally:
                with contextlib.suppress(OSError):
                    probe.rmdir()
            if usable:
                controllers.append(_Controller(name, parent, version))
            elif not any(c.parent == parent for c in controllers):
                with contextlib.suppress(OSError):
                    parent.rmdir()
        if not controllers:
            return None
        return cls(controllers, max_processes, memory_bytes)

    def create(self) -> list[str]:
        """Fresh cgroups for one command, limits set; the directories the wrapper must join."""
        self.sweep()
        name = f"c{next(self._counter)}"
        made: list[Path] = []
        for c in self.controllers:
            directory = c.parent / name
            if directory in made:  # v2: one directory holds both controllers
                continue
            directory.mkdir(exist_ok=True)
            made.append(directory)
        for c in self.controllers:
            directory = c.parent / name
            if c.name == "pids":
                _write(directory / "pids.max", str(self.max_processes))
            elif c.version == 1:
                _write(directory / "memory.limit_in_bytes", str(self.memory_bytes))
                _write(directory / "memory.memsw.limit_in_bytes", str(self.memory_bytes))
            else:
                _write(directory / "memory.max", str(self.memory_bytes))
                _write(directory / "memory.swap.max", "0")
        self._made.append((time.monotonic(), made))
        return [str(d) for d in made]

    def sweep(self, everything: bool = False) -> None:
        """Remove the cgroups of commands that have ended (rmdir fails on a populated cgroup)."""
        now = time.monotonic()
        keep: list[tuple[float, list[Path]]] = []
        for made_at, dirs in self._made:
            if not everything and now - made_at < _SWEEP_AFTER_S:
                keep.append((made_at, dirs))
                continue
            left = []
            for d in dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
            if left:
                keep.append((made_at, left))
        self._made = keep

    def close(self) -> None:
        self.sweep(everything=True)
        for c in self.controllers:
            _remove_tree(c.parent)


def _remove_stale(own: Path) -> None:
    """Remove the `onward-<pid>` cgroups of processes that are gone (a server killed with -9)."""
    try:
        candidates = [d for d in own.iterdir() if d.is_dir() and d.name.startswith("onward-")]
    except OSError:
        return
    for directory in candidates:
        pid = directory.name.removeprefix("onward-")
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove_tree(directory)
