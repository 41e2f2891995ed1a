"""The built-image cache of ``deploy/images.py``: a saved image loads into an engine with its tag
and digest label, replaces the image's earlier saves; a missing save is a miss, and a damaged
one is a miss that is removed."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from deploy.images import HASH_LABEL, ImageSpec, load_saved, save_built, saved_image

SPEC = ImageSpec("fulcrum-it/cache-probe", "Dockerfile.amphora", (), (), ())


def _rootfs() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        body = b"probe\n"
        info = tarfile.TarInfo("probe.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@pytest.fixture
def probe_reference(docker_client: docker.DockerClient) -> Iterator[str]:
    reference = f"{SPEC.name}:{uuid.uuid4().hex[:12]}"
    repository, tag = reference.split(":")
    docker_client.api.import_image(
        src=_rootfs(), repository=repository, tag=tag, changes=[f"LABEL {HASH_LABEL}=d1"]
    )
    try:
        yield reference
    finally:
        try:
            docker_client.images.remove(reference, force=True)
        except docker.errors.ImageNotFound:
            pass


def test_a_saved_image_loads_with_its_tag_and_label(
    docker_client: docker.DockerClient, probe_reference: str, tmp_path: Path
) -> None:
    earlier = saved_image(tmp_path, SPEC, "d0")
    earlier.write_bytes(b"an earlier save")
    saved = saved_image(tmp_path, SPEC, "d1")

    save_built(docker_client, probe_reference, saved)
    assert saved.exists() and not earlier.exists()
    docker_client.images.remove(probe_reference, force=True)

    assert load_saved(docker_client, saved, probe_reference)
    assert docker_client.images.get(probe_reference).labels[HASH_LABEL] == "d1"


def test_a_missing_save_is_a_miss(
    docker_client: docker.DockerClient, probe_reference: str, tmp_path: Path
) -> None:
    assert not load_saved(docker_client, saved_image(tmp_path, SPEC, "d2"), probe_reference)


def test_a_damaged_save_is_a_miss_and_removed(
    docker_client: docker.DockerClient, probe_reference: str, tmp_path: Path
) -> None:
    damaged = saved_image(tmp_path, SPEC, "d3")
    damaged.write_bytes(b"not a tar archive")
    assert not load_saved(docker_client, damaged, probe_reference)
    assert not damaged.exists()
