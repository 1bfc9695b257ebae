"""The operator's image for the test bed's node, assembled without Docker or a registry.

The Dockerfile is the production recipe: ``FROM python:3.11-slim``, ``pip install
--require-hashes -r requirements.lock`` and ``pip install --no-deps .`` into a virtualenv at
``/opt/signet``, the runtime stage running ``signet run`` as uid 65532.
Its base image has to be pulled from a registry, which this machine cannot reach, so the
test bed assembles the same layout from what is here:

- the host's CPython installation, relocated to ``/usr/local`` as in the official image
  (interpreter, standard library minus its tests and Tk, and exactly the shared libraries
  ``ldd`` says the interpreter and every extension module need, under their host paths);
- a fresh virtualenv at ``/opt/signet`` holding the same two installs of the same files
  the Dockerfile copies (the hashed lock, then the package; ``.dockerignore`` keeps
  ``signet_dev`` out, so does this), installed on the host and then relocated: its
  interpreter links, ``pyvenv.cfg`` and script shebangs are rewritten to the image's paths;
- ``/etc/passwd`` and ``/etc/group`` naming uid/gid 65532 like the Dockerfile's
  ``useradd``, and the image config's ``USER 65532:65532``, ``WORKDIR /tmp``,
  ``ENTRYPOINT ["signet"]``, ``CMD ["run"]``, ``PATH`` and ``PYTHON*`` variables.

Installing the dependencies takes most of a minute (from PyPI through pip's cache), and
every change to the operator's source makes a new image. So there are two caches under
``.tools/images``: the virtualenv with the dependencies alone (``requirements.lock``),
keyed by the lock, the interpreter and this recipe; and the image archive, keyed by the
whole build context (the lock included) as well. A source change then costs a ``pip
install --no-deps`` of the package on top of the cached dependencies (its own layer, as
the Dockerfile has it), and an unchanged checkout nothing at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from signet_dev import node
from signet_dev.kube import CHECKOUT
from signet_dev.node import Content, Directory, ImageEntry, Symlink, pack_image

REPOSITORY = "signet.local/signet"
"""The image name the node knows it by (``imagePullPolicy: Never``: nothing is pulled)."""
DEFAULT_CACHE = CHECKOUT / ".tools" / "images"
VENV = "/opt/signet"
"""Where the Dockerfile's ``python -m venv`` puts the virtualenv."""
PREFIX = "/usr/local"
"""Where ``python:3.11-slim`` installs CPython."""
UID = 65532
COMPLETE = ".signet-complete"
"""Written into a cached dependency virtualenv last: one without it was interrupted."""
KEEP = 2
"""Cached archives (~300 MiB each) and dependency virtualenvs kept: the current ones and
the ones before them (another checkout of a different commit may be using those)."""

BUILD_CONTEXT = ("requirements.lock", "pyproject.toml", "README.md", "operator")
"""What the Dockerfile's build stage COPYs (a test keeps the Dockerfile to exactly these)."""
_CONTEXT_IGNORED = ("signet_dev", "__pycache__", "*.egg-info", "*.pyc")
"""What ``.dockerignore`` keeps out of the context."""
_STDLIB_SKIPPED = {
    "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip",
    "site-packages", f"config-{sys.version_info.major}.{sys.version_info.minor}-"
    f"{sysconfig.get_config_var('MULTIARCH') or ''}",
}  # fmt: skip
"""Standard-library folders an operator never imports: tests (as the official image drops
them), Tk (it would drag X11 libraries in), the build configuration and the host's own
site-packages (a virtualenv without system site-packages never sees them)."""
_DYNLOAD_SKIPPED = ("_tkinter", "_test", "_ctypes_test", "_xxtestfuzz", "xxlimited", "nis")
_DLOPENED = ("libgcc_s.so.1",)
"""Libraries glibc loads at run time without ldd seeing them (thread cancellation)."""
_ETC_PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
    f"signet:x:{UID}:{UID}::/nonexistent:/usr/sbin/nologin\n"
)
_ETC_GROUP = f"root:x:0:\nsignet:x:{UID}:\n"
# glibc without nsswitch.conf asks DNS before /etc/hosts; the kubelet's hosts file (and a
# pod's hostAliases) must win, as in the Debian base image.
_NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"


class ImageBuildError(RuntimeError):
    """The image could not be assembled; the message says which step and why."""


@dataclass(frozen=True)
class OperatorImage:
    """A docker-archive of the operator, ready for ``LocalNode.import_image``."""

    archive: Path
    repository: str
    tag: str
    built: bool
    """False when the cache already held it."""
    seconds: float
    """Time to build it, or to find it in the cache."""

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def size(self) -> int:
        """Bytes of the (uncompressed) archive: about the image's size on the node."""
        return self.archive.stat().st_size


def build_operator_image(cache: Path = DEFAULT_CACHE) -> OperatorImage:
    """The operator image for this checkout and interpreter, built unless cached.

    A build holds a lock in the cache folder, so two test sessions wanting the same image
    build it once; the archive appears under its final name only when complete."""
    began = time.monotonic()
    key = _cache_key()
    tag = key[:16]
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"signet-operator-{tag}.tar"
    with _locked(cache / ".build.lock"):
        built = not archive.exists()
        if built:
            dependencies = _dependency_venv(cache)
            with tempfile.TemporaryDirectory(prefix="signet-image-") as scratch:
                _build(Path(scratch), dependencies, f"{REPOSITORY}:{tag}", archive)
            _prune(cache, "signet-operator-*.tar", keep=archive)
        else:
            os.utime(archive)  # most recently used: pruned last
    return OperatorImage(archive, REPOSITORY, tag, built, time.monotonic() - began)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _prune(cache: Path, pattern: str, keep: Path) -> None:
    """Remove all but the ``KEEP`` most recently used of ``pattern`` (``keep`` among them)."""
    entries = sorted(
        (p for p in cache.glob(pattern) if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[KEEP - 1 :]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


# What goes in ---------------------------------------------------------------------------


def _context_files() -> Iterator[tuple[str, Path]]:
    """The build context as the Dockerfile sees it: (path in the context, host file)."""
    for top in BUILD_CONTEXT:
        path = CHECKOUT / top
        if path.is_file():
            yield top, path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not _ignored(d))
            for name in sorted(files):
                if not _ignored(name):
                    host = Path(folder) / name
                    yield str(host.relative_to(CHECKOUT)), host


def _ignored(name: str) -> bool:
    return any(Path(name).match(pattern) for pattern in _CONTEXT_IGNORED)


def _recipe_key() -> hashlib._Hash:
    """A hash of the interpreter and this recipe, which every cache entry depends on."""
    digest = hashlib.sha256()
    digest.update(f"{sys.version}\0{sys.base_prefix}\0".encode())
    digest.update(Path(__file__).read_bytes())
    for part in (pack_image, node._write_layer):
        digest.update(inspect.getsource(part).encode())
    return digest


def _cache_key() -> str:
    """The recipe's hash and the build context's: any change to what the image would hold
    makes a new key. The dependencies' versions and hashes are those of requirements.lock,
    which is part of the context."""
    digest = _recipe_key()
    for name, host in _context_files():
        digest.update(name.encode() + b"\0" + hashlib.sha256(host.read_bytes()).digest())
    return digest.hexdigest()


LOCK = CHECKOUT / "requirements.lock"
"""The runtime dependencies, pinned with hashes (``make lock``): what the Dockerfile installs."""


# Building -------------------------------------------------------------------------------


def _dependency_venv(cache: Path) -> Path:
    """The Dockerfile's ``python -m venv /opt/signet`` with the package's dependencies
    installed, built once per ``requirements.lock`` and interpreter (the caller holds the
    build lock). It is built where it stays: a virtualenv names its own path inside (its
    scripts' shebangs), which the image relocates, so it cannot be moved once made."""
    digest = _recipe_key()
    digest.update(LOCK.read_bytes())
    venv = cache / f"venv-{digest.hexdigest()[:16]}"
    complete = venv / COMPLETE
    if complete.exists():
        os.utime(venv)
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # a build that was interrupted
    _run([str(_interpreter()), "-m", "venv", str(venv)], "python -m venv")
    # The Dockerfile's `pip install --no-cache-dir --require-hashes -r requirements.lock`;
    # pip's wheel cache (no --no-cache-dir) makes a rebuild take seconds, not minutes.
    _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
         "--no-input", "--quiet", "--require-hashes", "-r", str(LOCK)],
        "pip install --require-hashes -r requirements.lock",
    )  # fmt: skip
    complete.touch()
    _prune(cache, "venv-*", keep=venv)
    return venv


def _interpreter() -> Path:
    """The host's CPython (the installation a virtualenv of it points at)."""
    return Path(sys.base_prefix) / "bin" / _version()


def _version() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def _build(scratch: Path, dependencies: Path, reference: str, out: Path) -> None:
    context = scratch / "src"
    for name, host in _context_files():
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, target)
    # The package alone (its dependencies are in the cached virtualenv): what `pip install .`
    # adds on top of them, in a folder of its own that becomes the image's last layer.
    package = scratch / "package"
    _run(
        [str(dependencies / "bin" / "python"), "-m", "pip", "install", "--no-deps",
         "--disable-pip-version-check", "--no-input", "--quiet", f"--target={package}",
         str(context)],
        "pip install --no-deps .",
    )  # fmt: skip
    base = Path(sys.base_prefix)
    relocate = {str(dependencies): VENV, str(base): PREFIX}
    site_packages = f"{VENV}/lib/{_version()}/site-packages"
    pack_image(
        [
            _runtime_layer(base, _version(), _interpreter(), dependencies),
            _venv_layer(dependencies, relocate),
            _package_layer(package, site_packages, relocate),
        ],
        reference,
        out,
        entrypoint=["signet"],
        cmd=["run"],
        env=[
            f"PATH={VENV}/bin:{PREFIX}/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "PYTHONUNBUFFERED=1",
            "PYTHONDONTWRITEBYTECODE=1",
        ],
        user=f"{UID}:{UID}",
        working_dir="/tmp",  # noqa: S108 - the image's WORKDIR, as in the Dockerfile
        extra_config={
            "ExposedPorts": {"8080/tcp": {}, "9402/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "signet",
                "org.opencontainers.image.description": "assembled by signet_dev.operator_image"
                " from this machine's Python (the Dockerfile is the production recipe)",
            },
        },
    )


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise ImageBuildError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _runtime_layer(
    base: Path, version: str, interpreter: Path, venv: Path
) -> dict[str, ImageEntry]:
    """``python:3.11-slim``'s part: CPython under /usr/local, its libraries, /etc."""
    layer: dict[str, ImageEntry] = {
        f"{PREFIX}/bin/{version}": interpreter,
        f"{PREFIX}/bin/python3": Symlink(version),
        f"{PREFIX}/bin/python": Symlink("python3"),
        "/etc/passwd": Content(_ETC_PASSWD.encode()),
        "/etc/group": Content(_ETC_GROUP.encode()),
        "/etc/nsswitch.conf": Content(_NSSWITCH.encode()),
        "/tmp": Directory(0o1777),  # noqa: S108 - the image's own /tmp, as in any base image
    }
    stdlib = base / "lib" / version
    image_stdlib = PurePosixPath(PREFIX, "lib", version)
    elves = [interpreter]
    for folder, dirs, files in os.walk(stdlib):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIPPED)
        layer[str(image_stdlib.joinpath(*here.relative_to(stdlib).parts))] = here
        for name in files:
            if ".opt-" in name or (
                here.name == "lib-dynload" and name.startswith(_DYNLOAD_SKIPPED)
            ):
                continue  # optimised bytecode: the operator runs without -O
            path = here / name
            layer[str(image_stdlib.joinpath(*path.relative_to(stdlib).parts))] = path
            if name.endswith(".so"):
                elves.append(path)
    elves += venv.rglob("*.so")
    for image_path, entry in _shared_libraries(elves, inside=(venv, stdlib)).items():
        layer.setdefault(image_path, entry)
    certificates = Path("/etc/ssl/certs/ca-certificates.crt")
    if certificates.exists():  # python:3.11-slim carries Debian's CA bundle
        _add_host_path(layer, certificates)
    return layer


def _venv_layer(venv: Path, relocate: dict[str, str]) -> dict[str, ImageEntry]:
    """The Dockerfile's ``COPY --from=build /opt/signet /opt/signet``, moved from where it
    was built on the host: absolute links and the text that names host paths rewritten."""
    layer: dict[str, ImageEntry] = {}
    for folder, dirs, files in os.walk(venv):
        here = Path(folder)
        dirs.sort()
        layer[_moved(str(here), relocate)] = here
        for name in [*files, *(d for d in dirs if (here / d).is_symlink())]:
            path = here / name
            if path == venv / COMPLETE:
                continue
            image_path = _moved(str(path), relocate)
            if path.is_symlink():
                target = os.readlink(path)
                moved = _moved(target, relocate)
                layer[image_path] = Symlink(moved) if moved != target else path
            elif here == venv / "bin" or path == venv / "pyvenv.cfg":
                data = path.read_bytes()
                for old, new in relocate.items():
                    data = data.replace(old.encode(), new.encode())
                layer[image_path] = Content(data, path.stat().st_mode & 0o7777)
            else:
                layer[image_path] = path
    return layer


def _package_layer(
    package: Path, site_packages: str, relocate: dict[str, str]
) -> dict[str, ImageEntry]:
    """``pip install --no-deps --target``'s folder laid over the virtualenv: its modules
    into site-packages, its ``bin`` (the ``signet`` script) into the virtualenv's, with
    the shebang naming the image's interpreter."""
    layer: dict[str, ImageEntry] = {}
    for folder, dirs, files in os.walk(package):
        here = Path(folder)
        dirs.sort()
        relative = here.relative_to(package)
        if relative.parts[:1] == ("bin",):
            destination = PurePosixPath(VENV, *relative.parts)
        else:
            destination = PurePosixPath(site_packages, *relative.parts)
        if relative.parts:
            layer[str(destination)] = here
        for name in files:
            path = here / name
            if relative.parts[:1] == ("bin",):
                data = path.read_bytes()
                for old, new in relocate.items():
                    data = data.replace(old.encode(), new.encode())
                layer[str(destination / name)] = Content(data, path.stat().st_mode & 0o7777)
            else:
                layer[str(destination / name)] = path
    return layer


def _moved(path: str, relocate: dict[str, str]) -> str:
    for old, new in relocate.items():
        if path == old or path.startswith(old + "/"):
            return new + path[len(old) :]
    return path


# Shared libraries -----------------------------------------------------------------------


def _shared_libraries(elves: list[Path], inside: tuple[Path, ...]) -> dict[str, ImageEntry]:
    """Every library ``ldd`` resolves for ``elves``, plus the ones glibc loads itself,
    except those ``inside`` folders the image carries anyway (wheels' bundled libraries,
    found through ``$ORIGIN``).

    Libraries in the system folders keep their host path (and the symlinks on the way,
    such as merged-/usr's ``/lib -> usr/lib``); one found anywhere else (libpython, through
    the host interpreter's RUNPATH) goes to libc's folder, which the dynamic loader
    searches without a cache."""
    needed: dict[str, Path] = {}
    for elf in elves:
        needed.update(
            (name, path)
            for name, path in _ldd(elf).items()
            if not any(path.is_relative_to(folder) for folder in inside)
        )
    libc = next((path for name, path in needed.items() if name.startswith("libc.so")), None)
    if libc is None:
        raise ImageBuildError("ldd found no libc for the interpreter")
    libc_folder = libc.resolve().parent
    system = {libc.parent, libc_folder, *(Path(p) for p in ("/lib", "/usr/lib", "/lib64"))}
    system |= {Path("/usr/lib64")}
    for name in _DLOPENED:
        if (libc_folder / name).exists():
            needed[name] = libc_folder / name
    entries: dict[str, ImageEntry] = {}
    for name, path in needed.items():
        if path.parent in system:
            _add_host_path(entries, path)
        else:
            entries[str(libc_folder / name)] = path.resolve()
    return entries


def _ldd(elf: Path) -> dict[str, Path]:
    """{soname or loader path: resolved host path} for one ELF file."""
    result = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False)
    if "statically linked" in result.stdout or "not a dynamic" in result.stdout + result.stderr:
        return {}
    if result.returncode != 0:
        raise ImageBuildError(f"ldd {elf}: {result.stderr.strip()}")
    found: dict[str, Path] = {}
    for line in result.stdout.splitlines():
        name, arrow, rest = line.strip().partition(" => ")
        if arrow:
            if rest.startswith("not found"):
                raise ImageBuildError(f"{elf} needs {name}, which this machine lacks")
            target = rest.split(" (")[0].strip()
            if target:
                found[name] = Path(target)
        elif name.startswith("/"):  # the dynamic loader, named by its absolute path
            found[name] = Path(name.split(" (")[0])
    return found


def _add_host_path(entries: dict[str, ImageEntry], path: Path) -> None:
    """``path`` as the image needs it: each symlink met on the way (a folder's or the
    file's own) is added as it is, and the walk goes on where it points, so the file
    itself lands at its real path and every name the host resolves resolves in the image."""
    current = Path("/")
    parts = path.parts[1:]
    for index, part in enumerate(parts):
        candidate = current / part
        if candidate.is_symlink():
            entries[str(candidate)] = candidate
            target = Path(os.path.normpath(current / os.readlink(candidate)))
            _add_host_path(entries, target.joinpath(*parts[index + 1 :]))
            return
        current = candidate
    entries[str(current)] = current


def main() -> int:
    """``python -m signet_dev.operator_image``: build (or find) the image and say so."""
    image = build_operator_image()
    verb = "built" if image.built else "cached"
    print(
        f"{image.reference} {verb} in {image.seconds:.1f}s: {image.archive} "
        f"({image.size / 2**20:.0f} MiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
