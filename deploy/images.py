"""Build Fulcrum's images: the base, the amphora image and the control-plane image.

    python deploy/images.py [--docker-host URL] [--base-image REF] [--cache-dir DIR] [--force]

Base image. Without ``--base-image`` the base is made locally, for machines that cannot pull
from a registry: an ``mmdebstrap`` tarball of Debian bookworm (minbase plus python3,
python3-venv, haproxy, keepalived, iproute2, iputils-ping, nftables), cached as
``<cache>/base-bookworm-<hash>.tar.zst`` and imported with ``docker import`` as
``fulcrum/base:bookworm``. An image with Debian packages of its own (``ImageSpec.packages``:
the control plane's Patroni and etcd) gets its own base with them added, tagged
``fulcrum/base:bookworm-<hash>``, so the amphora image never carries them. With ``--base-image
debian:bookworm-slim`` (any registry) the Dockerfiles install those packages themselves.

Python packages never need the network inside a build: the wheels (for CPython 3.11,
manylinux, the engine's architecture; versions pinned to this interpreter's environment) are
downloaded on this machine into ``<cache>/wheels`` and copied into each build context. Each
context holds ``app/`` (the source), ``bin/`` (entry points) and ``wheels/``; an image whose
context hash (a label) is unchanged is not rebuilt. A locally based image, once built, is kept
as ``<cache>/image-<name>-<hash>.tar`` (``docker save``; one per image, the latest): another
engine (a fresh clone's) that wants the same hash loads it in seconds instead of building it,
and needs no base imported. Prints the time of every step.

The amphora's ``app/`` holds ``services/amphora`` and only the ``libs`` modules it imports
(``sources_of``), so the image never carries the control plane's code, the signing CA
included. The control plane's holds ``libs``, ``services`` and ``deploy/local`` (the
``fulcrum`` command).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors

from libs.common.errors import InfrastructureError

REPO: Final = Path(__file__).resolve().parent.parent
DEPLOY: Final = REPO / "deploy"
LOCAL_BASE: Final = "fulcrum/base:bookworm"
AMPHORA_IMAGE: Final = "fulcrum/amphora"
CONTROLPLANE_IMAGE: Final = "fulcrum/controlplane"
HASH_LABEL: Final = "fulcrum.context-hash"
BASE_HASH_LABEL: Final = "fulcrum.base-hash"
BASE_PACKAGES: Final = (
    "python3",
    "python3-venv",
    "haproxy",
    "keepalived",
    "iproute2",
    "iputils-ping",
    "nftables",
)
DEBIAN_SOURCES: Final = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# The dependencies of pyproject.toml the agent imports (tests/unit/test_images.py checks that
# they cover every module it loads); the control plane gets them all.
AMPHORA_DEPENDENCIES: Final = (
    "aiohttp",
    "cryptography",
    "opentelemetry-api",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-sdk",
    "prometheus-client",
    "pydantic",
    "pydantic-settings",
)
# Debian packages of the control-plane image only: Patroni and etcd of the compose profile
# `cluster` (Debian's patroni brings its dependencies as Debian packages; Postgres is the
# pgserver wheel's, as everywhere).
CONTROLPLANE_PACKAGES: Final = ("patroni", "etcd-server")
# Dependencies of pyproject.toml no image gets as a wheel: some of Patroni's own dependencies
# (ydiff, python-etcd) ship no wheels; the control-plane image has Debian's patroni instead.
LOCAL_ONLY_DEPENDENCIES: Final = ("patroni",)
# Debian bookworm's interpreter, whatever runs this script.
TARGET_PYTHON: Final = "3.11"
_CHUNK: Final = 1 << 20


def default_cache_dir() -> Path:
    return Path(os.environ.get("FULCRUM_CACHE_DIR", "~/.cache/fulcrum")).expanduser() / "docker"


def log(message: str) -> None:
    print(f"images: {message}", flush=True)


class BuildError(InfrastructureError, RuntimeError):
    """A step failed; the message says which and carries the tool's output."""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: str
    sources: tuple[str, ...]  # paths under the repo copied into app/
    scripts: tuple[str, ...]  # files of deploy/bin copied into bin/
    dependencies: tuple[str, ...] | None  # of pyproject.toml; None: every one
    packages: tuple[str, ...] = ()  # Debian packages beyond BASE_PACKAGES


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Every module a file names in an absolute import, also inside functions; for ``from a
    import b`` both ``a`` and ``a.b`` (``b`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources_of(package: str, shared: str = "libs") -> tuple[str, ...]:
    """Repo paths an image needs to run ``package``: its directory, the ``__init__.py`` of the
    packages above it, and every module of ``shared`` it imports, directly or not."""
    directory = REPO.joinpath(*package.split("."))
    wanted: set[Path] = set()
    pending = [p for p in directory.rglob("*.py") if "__pycache__" not in p.parts]
    while pending:
        path = pending.pop()
        for parent in path.relative_to(REPO).parents[:-1]:
            init = REPO / parent / "__init__.py"
            if init.is_file() and init not in wanted and not init.is_relative_to(directory):
                wanted.add(init)
                pending.append(init)
        for module in _imported_modules(path):
            if module.split(".")[0] != shared:
                continue
            target = _module_file(module)
            if target is not None and target not in wanted:
                wanted.add(target)
                pending.append(target)
    files = sorted(str(p.relative_to(REPO)) for p in wanted)
    return (str(directory.relative_to(REPO)), *files)


IMAGES: Final = (
    ImageSpec(
        AMPHORA_IMAGE,
        "Dockerfile.amphora",
        sources_of("services.amphora"),
        ("amphora-entrypoint",),
        AMPHORA_DEPENDENCIES,
        ("conntrack",),
    ),
    ImageSpec(
        CONTROLPLANE_IMAGE,
        "Dockerfile.controlplane",
        ("libs", "services", "deploy/__init__.py", "deploy/local"),
        ("fulcrum-entrypoint", "fulcrum"),
        None,
        CONTROLPLANE_PACKAGES,
    ),
)


def run(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


# -- base image -----------------------------------------------------------------------------


def base_hash(packages: tuple[str, ...] = ()) -> str:
    text = "\n".join(("bookworm", "minbase", *BASE_PACKAGES, *packages, *DEBIAN_SOURCES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def local_base_reference(packages: tuple[str, ...] = ()) -> str:
    """``fulcrum/base:bookworm``, or for a base with ``packages`` added its own tag."""
    return f"{LOCAL_BASE}-{base_hash(packages)[:8]}" if packages else LOCAL_BASE


def ensure_base_tarball(cache_dir: Path, packages: tuple[str, ...] = ()) -> Path:
    """The cached rootfs tarball (BASE_PACKAGES plus ``packages``); made with mmdebstrap
    (about a minute) when missing."""
    tarball = cache_dir / f"base-bookworm-{base_hash(packages)}.tar.zst"
    if tarball.exists():
        log(f"base tarball cached: {tarball} ({tarball.stat().st_size / 1e6:.0f} MB)")
        return tarball
    for tool in ("mmdebstrap", "zstd"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is missing: apt-get install mmdebstrap zstd")
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".base-") as tmp:
        plain = Path(tmp) / "rootfs.tar"
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join((*BASE_PACKAGES, *packages))}",
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                "--format=tar",
                "bookworm",
                str(plain),
                *DEBIAN_SOURCES,
            ],
            "mmdebstrap",
        )
        built = time.monotonic()
        packed = Path(tmp) / "rootfs.tar.zst"
        run(["zstd", "-q", "-T0", "-10", str(plain), "-o", str(packed)], "zstd")
        packed.replace(tarball)
    log(
        f"base tarball made in {built - started:.1f} s (mmdebstrap) + "
        f"{time.monotonic() - built:.1f} s (zstd): {tarball.stat().st_size / 1e6:.0f} MB"
    )
    return tarball


def _decompressed(tarball: Path) -> Iterator[bytes]:
    with subprocess.Popen(["zstd", "-dc", str(tarball)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(_CHUNK):
            yield chunk
    if proc.returncode != 0:
        raise BuildError(f"zstd -dc {tarball} failed ({proc.returncode})")


def ensure_local_base(
    client: docker.DockerClient, cache_dir: Path, force: bool, packages: tuple[str, ...] = ()
) -> str:
    """Import the base tarball as ``local_base_reference(packages)`` unless the engine has it;
    return that reference."""
    wanted = base_hash(packages)
    reference = local_base_reference(packages)
    if not force and _label(client, reference, BASE_HASH_LABEL) == wanted:
        log(f"{reference} present")
        return reference
    tarball = ensure_base_tarball(cache_dir, packages)
    started = time.monotonic()
    repository, tag = reference.split(":")
    client.api.import_image(
        src=_decompressed(tarball),
        stream_src=True,
        repository=repository,
        tag=tag,
        changes=[f"LABEL {BASE_HASH_LABEL}={wanted}", 'CMD ["/bin/bash"]'],
    )
    log(f"{reference} imported in {time.monotonic() - started:.1f} s")
    return reference


# -- wheels ---------------------------------------------------------------------------------


def project_requirements() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        dependencies: list[str] = tomllib.load(handle)["project"]["dependencies"]
    return dependencies


def requirements_for(spec: ImageSpec) -> list[str]:
    wanted = spec.dependencies
    return [
        r
        for r in project_requirements()
        if (wanted is None or _distribution(r) in wanted)
        and _distribution(r) not in LOCAL_ONLY_DEPENDENCIES
    ]


def _distribution(requirement: str) -> str:
    name = requirement
    for stop in "<>=!~[; ":
        name = name.split(stop, 1)[0]
    return name.strip().lower().replace("_", "-")


def _constraints(directory: Path) -> Path:
    """Pin every wheel to the version installed here, so images run what the tests ran."""
    frozen = run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], "pip freeze"
    ).splitlines()
    path = directory / "constraints.txt"
    path.write_text("\n".join(line for line in frozen if "==" in line) + "\n")
    return path


def _platform_args(machine: str) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", TARGET_PYTHON]
    args += ["--abi", f"cp{TARGET_PYTHON.replace('.', '')}"]
    # bookworm has glibc 2.36: every manylinux tag up to it fits.
    for minor in range(36, 4, -1):
        args += ["--platform", f"manylinux_2_{minor}_{machine}"]
    return args + ["--platform", f"manylinux2014_{machine}"]


def collect_wheels(
    requirements: list[str], target: Path, cache: Path, machine: str, scratch: Path
) -> None:
    """Put the wheels of ``requirements`` (and their dependencies) into ``target``.

    Copies from ``cache`` without the network when it has them all, else downloads into the
    cache first (PyPI through pip, as configured on this machine).
    """
    target.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    reqs = scratch / "requirements.txt"
    reqs.write_text("\n".join(requirements) + "\n")
    base = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    base += [*_platform_args(machine), "-c", str(_constraints(scratch)), "-r", str(reqs)]
    offline = [*base, "--no-index", "--find-links", str(cache), "-d", str(target)]
    if subprocess.run(offline, capture_output=True, check=False).returncode == 0:
        return
    started = time.monotonic()
    run([*base, "-d", str(cache)], "pip download")
    log(f"wheels downloaded into {cache} in {time.monotonic() - started:.1f} s")
    run(offline, "pip download (from the cache)")


# -- contexts and builds --------------------------------------------------------------------


def copy_sources(sources: tuple[str, ...], app: Path) -> None:
    """Copy the repo paths ``sources`` (files or directories) to the same paths under ``app``."""
    app.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for source in sources:
        src, dst = REPO / source, app / source
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy2(src, dst)


def prepare_context(spec: ImageSpec, root: Path, cache_dir: Path, machine: str) -> Path:
    context = root / spec.name.replace("/", "-")
    if context.exists():
        shutil.rmtree(context)
    copy_sources(spec.sources, context / "app")
    (context / "bin").mkdir()
    for script in spec.scripts:
        shutil.copy2(DEPLOY / "bin" / script, context / "bin" / script)
        (context / "bin" / script).chmod(0o755)
    shutil.copy2(DEPLOY / spec.dockerfile, context / "Dockerfile")
    requirements = requirements_for(spec)
    collect_wheels(requirements, context / "wheels", cache_dir / "wheels", machine, root)
    (context / "wheels" / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return context


def context_hash(context: Path, extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0")
        digest.update(oct(path.stat().st_mode & 0o777).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def image_digest(
    client: docker.DockerClient, spec: ImageSpec, context: Path, base: str | None
) -> str:
    """The build's identity (the image's ``HASH_LABEL``): its context and its base, the local
    base by its package hash (the same on every engine), a registry ``base`` by the engine's
    image id."""
    if base is None:
        return context_hash(
            context, f"{local_base_reference(spec.packages)}@{base_hash(spec.packages)}"
        )
    base_id = client.images.get(base).id if _exists(client, base) else base
    return context_hash(context, f"{base}@{base_id}")


def build(
    client: docker.DockerClient,
    context: Path,
    base: str,
    reference: str,
    digest: str,
) -> None:
    """``docker build`` the context as ``reference`` labelled ``digest``; the image it replaces
    is removed unless a container still uses it."""
    previous = client.images.get(reference).id if _exists(client, reference) else None
    started = time.monotonic()
    output: list[str] = []
    for chunk in client.api.build(
        path=str(context),
        tag=reference,
        buildargs={"BASE_IMAGE": base},
        labels={HASH_LABEL: digest},
        rm=True,
        forcerm=True,
        decode=True,
    ):
        if "stream" in chunk:
            output.append(chunk["stream"])
        if "error" in chunk:
            raise BuildError(f"docker build {reference}:\n{''.join(output)}{chunk['error']}")
    log(f"{reference} built in {time.monotonic() - started:.1f} s ({_size(client, reference)})")
    _remove_replaced(client, previous, reference)


def saved_image(cache_dir: Path, spec: ImageSpec, digest: str) -> Path:
    """Where a built image is kept (``docker save``) for the next engine that wants the same
    digest: a fresh clone's engine loads it in seconds instead of building it again."""
    return cache_dir / f"image-{spec.name.replace('/', '-')}-{digest}.tar"


def load_saved(client: docker.DockerClient, saved: Path, reference: str) -> bool:
    """Load ``saved`` as ``reference`` if the cache has it; False when it does not, or when
    the engine refuses it (a damaged file, which is then removed: the caller builds)."""
    if not saved.exists():
        return False
    previous = client.images.get(reference).id if _exists(client, reference) else None
    started = time.monotonic()
    try:
        with saved.open("rb") as handle:
            (image,) = client.images.load(handle)
    except (docker.errors.APIError, docker.errors.ImageLoadError, ValueError) as exc:
        log(f"{saved} not loaded ({exc}): removed, building instead")
        saved.unlink(missing_ok=True)
        return False
    image.tag(reference)
    log(f"{reference} loaded from {saved} in {time.monotonic() - started:.1f} s")
    _remove_replaced(client, previous, reference)
    return True


def save_built(client: docker.DockerClient, reference: str, saved: Path) -> None:
    """``docker save`` the image as ``saved``, replacing the image's earlier saves."""
    started = time.monotonic()
    partial = saved.with_suffix(".partial")
    with partial.open("wb") as handle:
        for chunk in client.images.get(reference).save(named=True):
            handle.write(chunk)
    partial.replace(saved)
    prefix = saved.name.rsplit("-", 1)[0]
    for older in saved.parent.glob(f"{prefix}-*.tar"):
        if older != saved:
            older.unlink(missing_ok=True)
    log(f"{reference} saved as {saved} in {time.monotonic() - started:.1f} s")


def _remove_replaced(client: docker.DockerClient, previous: str | None, reference: str) -> None:
    if previous is not None and previous != client.images.get(reference).id:
        with contextlib.suppress(docker.errors.APIError):  # still used by a container: keep
            client.images.remove(previous)


def _exists(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def _label(client: docker.DockerClient, reference: str, label: str) -> str | None:
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    labels: dict[str, Any] = image.labels or {}
    value = labels.get(label)
    return str(value) if value is not None else None


def _size(client: docker.DockerClient, reference: str) -> str:
    return f"{client.images.get(reference).attrs['Size'] / 1e6:.0f} MB"


def _machine(client: docker.DockerClient) -> str:
    arch = str(client.version().get("Arch") or platform.machine())
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def build_images(
    docker_host: str | None,
    *,
    base_image: str | None = None,
    cache_dir: Path | None = None,
    tag: str = "latest",
    force: bool = False,
) -> None:
    """Make the bases (unless given), then build the amphora and control-plane images."""
    cache = cache_dir or default_cache_dir()
    started = time.monotonic()
    client = (
        docker.DockerClient(base_url=docker_host, version="auto", timeout=900)
        if docker_host
        else docker.from_env(version="auto", timeout=900)
    )
    try:
        machine = _machine(client)
        with tempfile.TemporaryDirectory(prefix="fulcrum-images-") as tmp:
            for spec in IMAGES:
                context = prepare_context(spec, Path(tmp), cache, machine)
                digest = image_digest(client, spec, context, base_image)
                reference = f"{spec.name}:{tag}"
                if not force and _label(client, reference, HASH_LABEL) == digest:
                    log(f"{reference} up to date ({_size(client, reference)})")
                    continue
                saved = saved_image(cache, spec, digest)
                if base_image is None and not force and load_saved(client, saved, reference):
                    continue
                base = base_image or ensure_local_base(client, cache, force, spec.packages)
                build(client, context, base, reference, digest)
                if base_image is None:
                    save_built(client, reference, saved)
    finally:
        client.close()
    log(f"done in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"))
    parser.add_argument(
        "--base-image", help="e.g. debian:bookworm-slim (default: make fulcrum/base locally)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--tag", default="latest")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        build_images(
            args.docker_host,
            base_image=args.base_image,
            cache_dir=args.cache_dir,
            tag=args.tag,
            force=args.force,
        )
    except (BuildError, docker.errors.DockerException) as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
