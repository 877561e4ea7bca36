"""Tiny EPIC-Kitchens / HAC trees in the exact layouts, and tiny pretrained checkpoints."""

import shutil

import pytest
from media_setup import write_tiny_checkpoints

from merdg.testing import make_epic_fixture, make_hac_fixture


@pytest.fixture(scope="session")
def epic_root(tmp_path_factory):
    return make_epic_fixture(tmp_path_factory.mktemp("epic"))


@pytest.fixture(scope="session")
def hac_root(tmp_path_factory):
    return make_hac_fixture(tmp_path_factory.mktemp("hac"), clips=4)


@pytest.fixture
def epic_copy(epic_root, tmp_path):
    """A private copy that a test may damage."""
    return shutil.copytree(epic_root, tmp_path / "epic")


@pytest.fixture
def hac_copy(hac_root, tmp_path):
    return shutil.copytree(hac_root, tmp_path / "hac")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    return folder, write_tiny_checkpoints(folder)
