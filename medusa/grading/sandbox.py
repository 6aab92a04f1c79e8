"""``--sandbox``: the submission's process in Linux namespaces, seeing only what it needs.

``unshare`` (util-linux) gives the child a user, mount, network and PID namespace of its own; then
this module, run as ``python -m medusa.grading.sandbox CONFIG`` inside them, builds a new root on a
memory file system and ``chroot``s into it before the child starts:

- shared read-only, at their own paths: the system's programs and libraries (``/usr``, ``/lib*``,
``/bin``), a few
  files of ``/etc`` the dynamic loader and Python read, the Python installation, this package
  (without its ``samples`` folder, which holds references), the submission's folder and the model's
  files;
- of ``/dev``, only the harmless nodes (``null``, ``zero``, ``full``, ``random``, ``urandom``) and
the GPU's
  (``nvidia*``), a fresh ``/dev/shm``; ``/sys`` read-only, a fresh ``/proc`` that shows the
  namespace's processes only, and an empty ``/tmp`` that vanishes with the child;
- no network (a new network namespace has only a loopback device, down).

Nothing else of the grader's machine is there: not the dataset or its references, not the grader's
output folder, not its home or its environment. The new root replaces the old one (``pivot_root``,
the old root detached), so no ``chroot`` trick leads back, and before the submission's Python starts
the process gives up every capability (bounding set emptied, ``no_new_privs``, root's special
treatment locked off): although it is uid 0 of its user namespace it cannot mount, unmount, remount
or ``chroot``, so the read-only binds and the masks over references stay as they are. Killing the
first process ends every process of the namespace.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import platform
import shutil
import site
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medusa.errors import MedusaError

UNSHARE = ["--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "--kill-child"]
SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
ETC = [
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "nsswitch.conf",
    "passwd",
    "group",
    "localtime",
    "alternatives",
    "os-release",
]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
DEVICES = ["null", "zero", "full", "random", "urandom"]
# syscall numbers
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217, "riscv64": 41}
PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 28, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP, SECBIT_KEEP_CAPS_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE, each
# with its lock
SECURE_BITS = 0b11101111
# statvfs flags → the mount flags a read-only remount of a bind must keep (the kernel refuses to
# drop them)
KEPT_FLAGS = {
    1: MS_RDONLY,
    2: MS_NOSUID,
    4: MS_NODEV,
    8: MS_NOEXEC,
    1024: MS_NOATIME,
    2048: MS_NODIRATIME,
    4096: MS_RELATIME,
}


@dataclass
class SandboxSpec:
    """What the child may read besides the system and Python: shared read-only, and folders hidden
    inside them."""

    read_only: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)


def check_supported() -> None:
    """One line, before any work, where the machine cannot build the sandbox."""
    if not sys.platform.startswith("linux"):
        raise MedusaError(
            "--sandbox needs Linux namespaces; grade without --sandbox (docs/grading.md says what "
            "that protects)"
        )
    unshare = shutil.which("unshare")
    if unshare is None:
        raise MedusaError(
            "--sandbox needs the unshare command (util-linux: apt install util-linux); grade"
            " without --sandbox (docs/grading.md says what that protects)"
        )
    probe = subprocess.run([unshare, *UNSHARE, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["refused"])[-1]
        raise MedusaError(
            f"--sandbox: this machine refuses user namespaces ({why}); allow them (e.g. sysctl "
            "kernel.unprivileged_userns_clone=1) or grade without --sandbox (docs/grading.md)"
        )


def python_paths() -> list[str]:
    """The Python installation and its packages (this package excepted: it is shared on its own)."""
    import medusa

    package_root = str(Path(medusa.__file__).resolve().parents[1])
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        str(Path(sys.executable).resolve().parent),
    }
    paths.update(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str) and os.path.isdir(user):
        paths.add(user)
    paths.update(p for p in sys.path if p and os.path.isdir(p) and "-packages" in p)
    paths.update(
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isdir(p)
    )
    return sorted({str(Path(p).resolve()) for p in paths if os.path.exists(p)} - {package_root})


def sandbox_spec(
    submission_folder: Path, model_paths: list[str], private: list[str]
) -> SandboxSpec:
    """Share the package, the submission's folder, Python and the model's files; hide the package's
    samples (they hold references) and every ``private`` path (the run's output folder, its data)
    that lies inside them."""
    import medusa

    package = Path(medusa.__file__).resolve().parent
    shared = [str(package), str(submission_folder.resolve()), *python_paths(), *model_paths]
    return SandboxSpec(read_only=shared, hidden=[str(package / "samples"), *private])


def sandboxed(
    spec: SandboxSpec, command: list[str], env: dict[str, str], folder: Path, fds: tuple[int, ...]
) -> tuple[list[str], dict[str, str], Path]:
    """The command that starts ``command`` inside the sandbox, its environment and working folder.
    """
    root = folder / "root"
    root.mkdir(exist_ok=True)
    config = {"root": str(root), "command": command, "fds": list(fds), **asdict(spec)}
    env = {**env, "HOME": "/tmp/home", "TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/home/.cache",
           "HF_HOME": "/tmp/home/hf"}
    boot = [
        shutil.which("unshare") or "unshare",
        *UNSHARE,
        sys.executable,
        "-m",
        "medusa.grading.sandbox",
        json.dumps(config),
    ]
    return boot, env, folder


# ---- inside the namespaces -----------------------------------------------------------------------
_libc = None


def _call(what: str, name: str, *args) -> None:
    """A libc call that raises OSError (with ``what`` said) where it fails."""
    global _libc
    _libc = _libc or ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    enc = (lambda s: None if s is None else s.encode())
    _call(f"mount {source or fstype} on {target}", "mount", enc(source), enc(target), enc(fstype),
          ctypes.c_ulong(flags), enc(data))


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _bind(root: str, path: str, read_only: bool = True) -> None:
    target = _inside(root, path)
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(path, target, None, MS_BIND | MS_REC)
    if read_only:
        kept = os.statvfs(path).f_flag
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        flags |= sum(ms for st, ms in KEPT_FLAGS.items() if kept & st)
        _mount(None, target, None, flags)


def _covered(path: str, done: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in done)


def _hide(root: str, path: str) -> None:
    """An empty folder (or file) over ``path`` inside the new root."""
    target = _inside(root, path)
    if os.path.isdir(path):
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    elif os.path.exists(path):
        _mount("/dev/null", target, None, MS_BIND)


def build_root(config: dict) -> None:
    """Mount the new root (see the module docstring) and enter it; later mounts go over earlier
    ones, so the shared folders come after ``/tmp`` and the hidden ones last."""
    root = config["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", 0, "mode=0755")
    done: list[str] = []
    for path in SYSTEM:
        if os.path.islink(path):
            os.symlink(os.readlink(path), _inside(root, path))
        elif os.path.isdir(path):
            _bind(root, path)
            done.append(path)
    os.makedirs(_inside(root, "/etc"), exist_ok=True)
    for name in ETC:
        path = f"/etc/{name}"
        if os.path.islink(path):
            os.symlink(os.readlink(path), _inside(root, path))
        elif os.path.exists(path):
            _bind(root, path)
    os.makedirs(_inside(root, "/tmp"), exist_ok=True)
    _mount("tmpfs", _inside(root, "/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _devices(root)
    if os.path.isdir("/sys"):
        _bind(root, "/sys")
    os.makedirs(_inside(root, "/proc"), exist_ok=True)
    _mount("proc", _inside(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in sorted(
        {os.path.realpath(p) for p in config["read_only"] if os.path.exists(p)}, key=len
    ):
        if not _covered(path, done):
            _bind(root, path)
            done.append(path)
    for path in config["hidden"]:
        path = os.path.realpath(path)
        if _covered(path, done):
            _hide(root, path)
    _enter(root)
    for d in ("/tmp/home", "/tmp/work"):
        os.makedirs(d, exist_ok=True)
    # nothing new at the top level
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp/work")


def _devices(root: str) -> None:
    """``/dev`` with the nodes Python and CUDA open, nothing else (no disks, no terminals, no kernel
    memory)."""
    dev = _inside(root, "/dev")
    os.makedirs(dev, exist_ok=True)
    for path in [f"/dev/{name}" for name in DEVICES] + sorted(glob.glob("/dev/nvidia*")):
        if os.path.exists(path) and not os.path.islink(path):
            _bind(root, path, read_only=False)
    os.makedirs(os.path.join(dev, "shm"), exist_ok=True)
    _mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, os.path.join(dev, name))


def _enter(root: str) -> None:
    """Make ``root`` the root and detach the old one, so nothing of the grader's tree stays
    reachable."""
    number = PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(0, f"pivot_root: no syscall number known for {platform.machine()}")
    os.chdir(root)
    # the old root now lies under the new one
    _call("pivot_root", "syscall", ctypes.c_long(number), b".", b".")
    _call("unmount the old root", "umount2", b".", ctypes.c_int(MNT_DETACH))
    os.chdir("/")


def drop_privileges() -> None:
    """Give up every capability for good: the submission's Python gets none, and no program it runs
    can regain any (uid 0 of the namespace is no longer special, nothing raises privileges on exec).
    """
    _call(
        "lock root's capabilities off",
        "prctl",
        PR_SET_SECUREBITS,
        ctypes.c_ulong(SECURE_BITS),
        0,
        0,
        0,
    )
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        _call(f"drop capability {cap}", "prctl", PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)
    _call("clear ambient capabilities", "prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _call("no_new_privs", "prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    try:
        build_root(config)
        drop_privileges()
    except OSError as exc:
        print(f"sandbox: {exc}", file=sys.stderr, flush=True)
        return 97
    for fd in config["fds"]:
        os.set_inheritable(fd, True)
    command = config["command"]
    os.execve(command[0], command, os.environ)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
