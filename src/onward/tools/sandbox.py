"""Commands under bubblewrap, and the decision of what to do where bubblewrap is missing.

A command sees the system read-only (/usr, /etc and the /bin, /lib… links), its user's workspace
read-write at /workspace, a private /tmp, its own /proc and a minimal /dev — and nothing else: no
other workspace, no $ONWARD_HOME, no files under /etc that other users could not read either. It
runs with every namespace unshared (network too, unless `sandbox_network`), as an unprivileged uid
inside a user namespace with no capabilities, in its own pid namespace (so killing the process
group of bwrap, or the server dying, ends every process the command started, setsid or not), with
CPU-time, memory and process-count limits (rlimits, and a per-command cgroup where one can be made).

Where bubblewrap does not work, `CommandSandbox` runs commands unsandboxed while the server has one
user — with a warning in the log and in GET /api/auth/me — and refuses them once it has several.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from onward.config import Settings
from onward.errors import ConfigError
from onward.tools.base import ToolError
from onward.tools.cgroups import JOIN_SCRIPT, CommandCgroups
from onward.tools.processes import NoSandbox

log = logging.getLogger(__name__)

INNER_UID = 1000  # who commands are inside the sandbox when the server runs as root
_INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SYSTEM_DIRS = ("/usr", "/etc")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
REFUSED_MESSAGE = (
    "commands are disabled: bubblewrap is not available and this server has several users; "
    "install bubblewrap"
)


def _private_paths(top: str) -> list[tuple[str, bool]]:
    """(path, is_dir) under `top` that other users may not read: hidden inside the sandbox too."""
    found: list[tuple[str, bool]] = []
    for root, dirs, files in os.walk(top):
        for name in list(dirs):
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o005 != 0o005:
                found.append((path, True))
                dirs.remove(name)
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and not st.st_mode & 0o004:
                found.append((path, False))
    return found


def _under(path: Path, top: str) -> bool:
    return path == Path(top) or path.is_relative_to(top)


class BwrapSandbox:
    name = "bwrap"

    def __init__(self, settings: Settings, bwrap: str, cgroups: CommandCgroups | None = None) -> None:
        self.settings = settings
        self.bwrap = bwrap
        self.cgroups = cgroups
        self.prlimit = shutil.which("prlimit", path="/usr/bin:/bin")
        self._static = self._static_args()

    def _static_args(self) -> list[str]:
        s = self.settings
        args = ["--die-with-parent", "--unshare-all", "--unshare-user"]
        if s.sandbox_network:
            args.append("--share-net")
        if os.geteuid() == 0:
            args += ["--uid", str(INNER_UID), "--gid", str(INNER_UID), "--cap-drop", "ALL"]
        args += ["--hostname", "onward"]
        for top in _SYSTEM_DIRS:
            if os.path.isdir(top):
                args += ["--ro-bind", top, top]
        for link in _SYSTEM_LINKS:
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        for path, is_dir in _private_paths("/etc"):
            args += ["--tmpfs", path] if is_dir else ["--ro-bind", "/dev/null", path]
        home = s.home.resolve()
        if any(_under(home, top) for top in (*_SYSTEM_DIRS, *_SYSTEM_LINKS)):
            args += ["--tmpfs", str(home)]  # $ONWARD_HOME inside a bound directory: hide it
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
        args += ["--setenv", "HOME", "/workspace", "--setenv", "PATH", _INNER_PATH, "--setenv", "TMPDIR", "/tmp"]
        return args

    def _limits(self) -> list[str]:
        """The rlimits applied inside the sandbox, right before the command's shell."""
        s = self.settings
        memory = s.sandbox_memory_mb * 1024 * 1024
        confined = self.cgroups.limits if self.cgroups else set()
        if self.prlimit is None:
            ulimits = [f"ulimit -t {s.sandbox_cpu_s}", "ulimit -c 0"]
            if "memory" not in confined:
                ulimits.append(f"ulimit -v {memory // 1024}")
            return ["/bin/sh", "-c", "; ".join(ulimits) + '; exec /bin/sh -c "$0"']
        limits = [self.prlimit, f"--cpu={s.sandbox_cpu_s}:{s.sandbox_cpu_s + 5}", "--core=0"]
        limits.append(f"--nproc={s.sandbox_max_processes}")  # per user namespace; root is exempt
        if "memory" not in confined:
            limits.append(f"--as={memory}")
        return [*limits, "--", "/bin/sh", "-c"]

    def command(self, shell_command: str, workspace: Path, cwd: Path) -> tuple[list[str], Path]:
        root = workspace.resolve()
        rel = cwd.resolve().relative_to(root).as_posix()
        inner = "/workspace" if rel == "." else f"/workspace/{rel}"
        argv = [self.bwrap, *self._static, "--bind", str(root), "/workspace", "--remount-ro", "/", "--chdir", inner, "--"]
        argv += [*self._limits(), shell_command]
        if self.cgroups is not None:
            dirs = self.cgroups.create()
            argv = ["/bin/sh", "-c", JOIN_SCRIPT, "onward-cgroup", str(len(dirs)), *dirs, *argv]
        return argv, root

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()


def probe(sandbox: BwrapSandbox) -> str | None:
    """Run one trivial command through `sandbox`; None if it works, else why not."""
    with tempfile.TemporaryDirectory(prefix="onward-probe-") as tmp:
        try:
            argv, cwd = sandbox.command("test -w /workspace", Path(tmp), Path(tmp))
            done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{sandbox.bwrap}: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        return f"{sandbox.bwrap} failed (exit {done.returncode}): {detail[-1] if detail else 'no output'}"
    return None


class CommandSandbox:
    """The sandbox the engine uses: bubblewrap when it works; otherwise unsandboxed in single-user
    mode (with a warning), and refusing every command in multi-user mode."""

    def __init__(self, settings: Settings, bwrap: BwrapSandbox | None, reason: str | None = None) -> None:
        self.settings = settings
        self.bwrap = bwrap
        self.reason = reason
        self.users = 1
        self._unsandboxed = NoSandbox()
        # "bwrap", "none" (unsandboxed, single-user) or "refused" (multi-user without bwrap)
        self.name = self._name()

    @property
    def multi_user(self) -> bool:
        return self.settings.multi_user or self.users > 1

    def _name(self) -> str:
        if self.bwrap is not None:
            return "bwrap"
        return "refused" if self.multi_user else "none"

    @property
    def warning(self) -> str | None:
        if self.bwrap is not None:
            return None
        why = self.reason or "bubblewrap is not available"
        if self.multi_user:
            return f"commands are disabled: {why}, and this server has several users; install bubblewrap"
        return (
            f"commands run WITHOUT a sandbox: {why}. They can read and change everything this server's "
            "user can; do not add users or expose this server until bubblewrap is installed"
        )

    def set_user_count(self, enabled_users: int) -> None:
        before = self.name
        self.users = enabled_users
        self.name = self._name()
        if self.name != before and self.warning:
            log.warning(self.warning)

    def command(self, shell_command: str, workspace: Path, cwd: Path) -> tuple[list[str], Path]:
        if self.bwrap is not None:
            return self.bwrap.command(shell_command, workspace, cwd)
        if self.multi_user:
            raise ToolError(REFUSED_MESSAGE)
        return self._unsandboxed.command(shell_command, workspace, cwd)

    def close(self) -> None:
        if self.bwrap is not None:
            self.bwrap.close()


def choose_sandbox(settings: Settings) -> CommandSandbox:
    """Probe bubblewrap once (unless `sandbox = "none"`) and decide; ConfigError if `sandbox =
    "bwrap"` and it does not work."""
    if settings.sandbox == "none":
        return CommandSandbox(settings, None, "the setting sandbox is 'none'")
    found = shutil.which(settings.bwrap_path)
    reason: str | None
    if found is None:
        reason = f"{settings.bwrap_path!r} was not found (install the bubblewrap package)"
    else:
        cgroups = None
        if settings.sandbox_cgroups:
            cgroups = CommandCgroups.detect(settings.sandbox_max_processes, settings.sandbox_memory_mb * 1024 * 1024)
        sandbox = BwrapSandbox(settings, found, cgroups)
        reason = probe(sandbox)
        if reason is None:
            confined = sorted(cgroups.limits) if cgroups else []
            log.info("commands run under bubblewrap (%s); cgroup limits: %s", found, ", ".join(confined) or "none")
            if "pids" not in confined and os.geteuid() == 0:
                log.warning(
                    "no pids cgroup can be created and this server runs as root, so the process-count "
                    "limit of commands is not enforced (RLIMIT_NPROC does not apply to root)"
                )
            return CommandSandbox(settings, sandbox)
        sandbox.close()
    if settings.sandbox == "bwrap":
        raise ConfigError(f"sandbox is 'bwrap' but bubblewrap does not work here: {reason}")
    return CommandSandbox(settings, None, reason)
