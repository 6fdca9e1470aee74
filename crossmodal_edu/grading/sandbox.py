"""A sandbox for each learner's kernel: what it may see, write, use, and whom it may signal.

The class grader starts every kernel through :func:`kernel_argv`. Two levels of protection exist,
and the grader reports which one was in force (:func:`protection`):

``bubblewrap`` (Linux, with ``bwrap`` installed: Debian/Ubuntu ``apt-get install bubblewrap``)
    the kernel runs in new mount, PID, network, IPC and UTS namespaces. It sees only the system's
    libraries, this Python, a *read-only copy* of the course package (no ``solutions/``, no hidden
    tests, not the instructor's checkout) and its own folder, the only place it can write. It has no
    network, cannot see or signal any process outside (its ``/proc`` is its own), and everything it
    starts dies with it. If the grader runs as root, each kernel runs as an unprivileged uid of its own.

``resource limits`` (anywhere else: macOS, Linux without bubblewrap)
    the kernel runs in its own session (its own process group, killed as a whole at the end), in its
    own folder, importing the same read-only copy of the package; if the grader runs as root, as an
    unprivileged uid of its own, so that it cannot write the course's files or the other submissions. It *can*
    still read what that user may read, use the network and signal that user's processes.

Both apply the same resource limits: memory (the data limit on Linux: heap and anonymous mappings), CPU time, file size, number of
processes, no core files.
"""

from __future__ import annotations

import compileall
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

try:  # POSIX only: without them (Windows) there is no sandbox, only the grader's own time limits
    import pwd
    import resource
except ImportError:  # pragma: no cover
    pwd = resource = None

__all__ = ["Confinement", "confinement", "stage_package", "kernel_argv", "BUBBLEWRAP", "LIMITS_ONLY"]

BUBBLEWRAP = "bubblewrap"
LIMITS_ONLY = "resource limits"
PACKAGE = Path(__file__).resolve().parents[1]  # crossmodal_edu/

# Runs first in the kernel's process: the limits, a session of its own, a user of its own; then the kernel.
_LAUNCH = r"""
import json, os, resource, sys
c = json.loads(sys.argv[1])
for name, value in c["limits"].items():
    try:
        resource.setrlimit(getattr(resource, name), (value, value))
    except (ValueError, OSError):
        pass
if c["setsid"] and os.getsid(0) != os.getpid():  # jupyter_client may have made it a session leader already
    os.setsid()
if c["uid"] is not None:
    os.setgroups([])
    os.setgid(c["gid"])
    os.setuid(c["uid"])
os.umask(0o077)
os.execv(c["argv"][0], c["argv"] + sys.argv[2:])
"""


@dataclass(frozen=True)
class Confinement:
    """How kernels are confined on this machine: ``kind`` (:data:`BUBBLEWRAP` or :data:`LIMITS_ONLY`),
    the user they run as (``None``: the grader's own), and what that leaves unprotected, in words."""

    kind: str
    uid: Optional[int]
    gid: Optional[int]
    why: str = ""

    def kernel_ids(self) -> tuple[Optional[int], Optional[int]]:
        """The user and group one kernel runs as: when the grader is root, a fresh unprivileged uid of the
        kernel's own (no two kernels share one, so none can signal another or use up its process limit);
        else the grader's own (``None``)."""
        if self.uid is None:
            return None, None
        uid = 2**20 + secrets.randbelow(2**20)
        return uid, uid

    def describe(self) -> str:
        user = "" if self.uid is None else ", as an unprivileged user of its own"
        if self.kind == BUBBLEWRAP:
            return (f"bubblewrap: own mount, PID and network namespaces, read-only course copy{user}, "
                    f"limits on memory, CPU time, file size and processes")
        text = f"resource limits only{user} (own session, limits on memory, CPU time, file size and processes"
        return text + f"; no file-system, network or process isolation: {self.why})"

    def unprotected(self) -> list[str]:
        """The attack families this confinement does not stop, for the report."""
        if self.kind == BUBBLEWRAP:
            return []
        missing = ["network access", "reading files the kernel's user may read (solutions/, other submissions)",
                   "writing where anyone may write (/tmp)"]
        if self.uid is None:
            missing += ["writing files the grader's user may write (the course, other submissions, the report)",
                        "signalling the grader's processes"]
        return missing


def _unprivileged() -> tuple[Optional[int], Optional[int]]:
    """``nobody``'s ids if the grader runs as root (kernels then drop to a uid of their own), else ``None``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or pwd is None:
        return None, None
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _read_only_binds() -> list[str]:
    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/ld.so.conf",
             "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime", "/etc/passwd", "/etc/group",
             "/etc/fonts", sys.base_prefix, sys.prefix, sys.exec_prefix]
    seen, binds = set(), []
    for path in paths:
        real = os.path.realpath(path)
        if path in seen or not os.path.exists(path):
            continue
        seen.add(path)
        binds += ["--ro-bind", path, path]
        if real != path and real not in seen and os.path.exists(real):  # /lib -> /usr/lib, and the like
            seen.add(real)
            binds += ["--ro-bind", real, real]
    return binds


def _parents(binds: list[str]) -> list[str]:
    """Folders above the bound paths, made traversable (bwrap would copy the host's modes: /root is 0700)."""
    targets = [binds[i + 2] for i in range(0, len(binds), 3)]
    parents = sorted({str(p) for t in targets for p in Path(t).parents if str(p) != "/"}, key=len)
    return [arg for p in parents for arg in ("--perms", "0755", "--dir", p)]


def _bwrap_prefix(box: Path, lib: Path, uid: Optional[int], env: dict[str, str]) -> list[str]:
    binds = _read_only_binds() + ["--ro-bind", str(lib), str(lib), "--bind", str(box), str(box)]
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--perms", "1777", "--tmpfs", "/tmp", *_parents(binds), *binds,
            "--dev", "/dev", "--proc", "/proc", "--chdir", str(box), "--hostname", "sandbox", "--clearenv"]
    if uid is None:
        argv += ["--unshare-user"]
    else:  # root: no user namespace, but the right to become the unprivileged user, and nothing else
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return argv + ["--"]


def _environment(box: Path, lib: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {"HOME": str(box), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(lib),
           "MPLCONFIGDIR": str(box / ".matplotlib"), "TMPDIR": str(box), "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra)
    return env


def _limits(memory_mb: int, cpu_seconds: int, file_mb: int, processes: int) -> dict[str, int]:
    # Memory: on Linux the data limit, which counts the heap and every private anonymous mapping (all that
    # NumPy and torch allocate) but not the address space that shared libraries reserve: importing
    # PyPI's CUDA build of torch maps over 3 GB of libraries on a machine without a GPU, so an address-space
    # limit would stop the kernel from importing torch at all. Elsewhere the address space.
    memory = "RLIMIT_DATA" if sys.platform.startswith("linux") else "RLIMIT_AS"
    limits = {memory: memory_mb * 2**20, "RLIMIT_CPU": cpu_seconds, "RLIMIT_FSIZE": file_mb * 2**20,
              "RLIMIT_CORE": 0, "RLIMIT_NOFILE": 1024}
    if sys.platform.startswith("linux"):  # on macOS the limit counts all of the user's processes
        limits["RLIMIT_NPROC"] = processes
    return {k: v for k, v in limits.items() if resource is not None and hasattr(resource, k)}


def kernel_argv(confine: Confinement, box: Path, lib: Path, limits: Any, env: Optional[dict[str, str]] = None,
                ids: tuple[Optional[int], Optional[int]] = (None, None)) -> tuple[list[str], dict[str, str]]:
    """The command that starts one learner's kernel (with ``{connection_file}`` for jupyter_client), and
    the environment to start it with. ``box`` is the kernel's own folder, ``lib`` the staged package,
    ``ids`` the user and group it runs as (:meth:`Confinement.kernel_ids`)."""
    environment = _environment(box, lib, env or {})
    limited = _limits(getattr(limits, "memory_mb", 4096), getattr(limits, "cpu_seconds", 1800),
                      getattr(limits, "file_mb", 256), getattr(limits, "processes", 256))
    if ids[0] is None and confine.kind != BUBBLEWRAP:  # the limit would count every process of the grader's user
        limited.pop("RLIMIT_NPROC", None)
    config = {"limits": limited, "setsid": confine.kind != BUBBLEWRAP, "uid": ids[0], "gid": ids[1],
              # Plain tracebacks: IPython's default, with source context, takes minutes on a deep recursion.
              "argv": [sys.executable, "-m", "ipykernel_launcher", "--InteractiveShell.xmode=Plain"]}
    launch = [sys.executable, "-I", "-S", "-c", _LAUNCH, json.dumps(config), "-f", "{connection_file}"]
    if confine.kind == BUBBLEWRAP:
        return _bwrap_prefix(box, lib, confine.uid, environment) + launch, {}
    return launch, environment


def prepare_box(box: Path, ids: tuple[Optional[int], Optional[int]] = (None, None)) -> None:
    """Make ``box`` the kernel's own folder: empty, and writable only by the user the kernel runs as."""
    box.mkdir(mode=0o700)
    if ids[0] is not None:
        os.chown(box, ids[0], ids[1])


@functools.lru_cache(maxsize=None)
def confinement(wanted: str = "auto") -> Confinement:
    """The strongest confinement this machine offers (``wanted``: ``auto``, ``bubblewrap`` or ``limits``)."""
    uid, gid = _unprivileged()
    why = "chosen with --sandbox limits" if wanted == "limits" else _bwrap_problem(uid, gid)
    if why is None:
        return Confinement(BUBBLEWRAP, uid, gid)
    if wanted == "bubblewrap":
        raise RuntimeError(f"--sandbox bubblewrap was asked for, but {why}")
    if uid is not None and not _runs_as(uid):
        why += (f"; and this Python ({sys.executable}) cannot run as an unprivileged user (a folder above it "
                f"is private), so kernels run as the grader's user")
        uid = gid = None
    return Confinement(LIMITS_ONLY, uid, gid, why)


def _runs_as(uid: int) -> bool:
    """Can an unprivileged uid of a kernel's own start this Python and import NumPy?"""
    try:
        run = subprocess.run([sys.executable, "-c", "import numpy"], user=uid + 1, group=uid + 1, extra_groups=[],
                             capture_output=True, timeout=120, cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False
    return run.returncode == 0


def _bwrap_problem(uid: Optional[int], gid: Optional[int]) -> Optional[str]:
    """``None`` if a bubblewrap sandbox starts here, else why not."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux, this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="crossmodal-bwrap-") as tmp:
        box, lib = Path(tmp) / "box", Path(tmp) / "lib"
        lib.mkdir()
        os.chmod(tmp, 0o755)
        ids = Confinement(BUBBLEWRAP, uid, gid).kernel_ids()
        prepare_box(box, ids)
        config = {"limits": {}, "setsid": False, "uid": ids[0], "gid": ids[1],
                  "argv": [sys.executable, "-I", "-c", "import os; open('ok', 'w').write(str(os.getuid()))"]}
        argv = _bwrap_prefix(box, lib, uid, {"PATH": "/usr/bin:/bin"}) + [
            sys.executable, "-I", "-S", "-c", _LAUNCH, json.dumps(config)]
        try:
            run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bubblewrap could not start ({error})"
        if run.returncode != 0 or not (box / "ok").exists():
            return f"bubblewrap could not start here: {(run.stderr or run.stdout).strip()[:200]}"
    return None


def stage_package(dest: Path) -> Path:
    """A read-only copy of the course package under ``dest`` (what a kernel may import), returned as the
    folder to put on its ``PYTHONPATH``. Compiled files are left out; nothing of ``solutions/`` is in it."""
    lib = dest / "lib"
    shutil.copytree(PACKAGE, lib / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compileall.compile_dir(str(lib), quiet=2)  # once here, rather than in every kernel
    for root, dirs, files in os.walk(lib):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
        os.chmod(root, 0o555)
    os.chmod(dest, 0o755)
    return lib
