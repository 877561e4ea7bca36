"""Small data sets for the robustness tests: tiny EPIC-Kitchens / HAC trees (media extra)."""

import pytest


@pytest.fixture(scope="session")
def epic_root(tmp_path_factory):
    pytest.importorskip("av")
    pytest.importorskip("pandas")
    from merdg.testing import make_epic_fixture

    return make_epic_fixture(tmp_path_factory.mktemp("epic"), segments=2)


@pytest.fixture(scope="session")
def hac_root(tmp_path_factory):
    pytest.importorskip("av")
    from merdg.testing import make_hac_fixture

    return make_hac_fixture(tmp_path_factory.mktemp("hac"), clips=2)
