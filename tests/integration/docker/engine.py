"""Session fixtures shared by the docker tests (integration and e2e): a docker engine and images.

The engine is FULCRUM_TEST_DOCKER_HOST when set, else the private dockerd of `.state/docker`
(the one `make dockerd` runs): started when it is not running and stopped at the end, attached
to (and left running) when it is. Images are built by deploy/images.py, cached in the engine and
in ~/.cache/fulcrum/docker. When no engine can be started the tests fail and say why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from deploy.local.dockerd import DockerdError, PrivateDockerd

REPO = Path(__file__).resolve().parents[3]
DOCKER_HOST_ENV = "FULCRUM_TEST_DOCKER_HOST"
AMPHORA_IMAGE = "fulcrum/amphora:latest"
CONTROLPLANE_IMAGE = "fulcrum/controlplane:latest"


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """DOCKER_HOST of the engine the docker tests use; testcontainers is pointed at it too."""
    external = os.environ.get(DOCKER_HOST_ENV)
    engine = None
    if external:
        url = external
    else:
        engine = PrivateDockerd(REPO / ".state" / "docker", die_with_parent=True)
        try:
            url = engine.start()
        except DockerdError as exc:
            pytest.fail(
                f"the docker tests need a docker engine and none could be started: {exc}\n"
                f"(install docker.io and run as root, or set {DOCKER_HOST_ENV})",
                pytrace=False,
            )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", url)
        # No registry here: testcontainers must not pull its reaper image, and this VM looks
        # like a container to it (/.dockerenv), so it must dial the docker host's address.
        patch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
        patch.setenv("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
        try:
            yield url
        finally:
            if engine is not None and engine.started:
                engine.stop()


@pytest.fixture(scope="session")
def docker_images(docker_host: str) -> list[str]:
    """Build (or find up to date) the base, amphora and control-plane images."""
    result = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "images.py"), "--docker-host", docker_host],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        pytest.fail(f"building the images failed:\n{result.stdout}{result.stderr}", pytrace=False)
    return [AMPHORA_IMAGE, CONTROLPLANE_IMAGE]


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_host, version="auto", timeout=120)
    try:
        yield client
    finally:
        client.close()
