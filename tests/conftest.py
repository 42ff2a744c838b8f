"""Fixtures shared by the project's tests: small real data.db files built from the bundled demo posts.

Also the hypothesis profiles: `ci` (chosen when CI is set) is derandomised and bounded so CI runs are repeatable;
pick one with HYPOTHESIS_PROFILE. pytest loads this file into an evaluation run from the checkout too (`pytest
--tagger=...` with no path starts from testpaths), where the test extras need not be installed: so nothing here
imports a test tool at import time, and the profiles are loaded only by runs of the tests.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import build_wd14_model

from tagger_eval.run.evaluation import DEFAULT_DATASET


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("tagger", None):  # an evaluation run, not the tests
        return
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=100, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def demo_subset(tmp_path: Path) -> Callable[..., Path]:
    """Copy the first `posts` demo posts (rows and images) into a fresh data.db under tmp_path."""

    def make(posts: int = 8, directory: str = "subset") -> Path:
        target = tmp_path / directory
        (target / "images").mkdir(parents=True)
        db_path = target / "data.db"
        shutil.copyfile(DEFAULT_DATASET, db_path)
        with sqlite3.connect(db_path) as connection:
            connection.execute("DELETE FROM posts WHERE id > ?", (posts,))
            for (relative,) in connection.execute("SELECT image_path FROM posts"):
                shutil.copyfile(DEFAULT_DATASET.parent / relative, target / relative)
        connection.close()
        return db_path

    return make


@pytest.fixture(scope="session")
def wd14_v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wd14_model(tmp_path_factory.mktemp("wd14-v2"), dynamic_batch=False)


@pytest.fixture(scope="session")
def wd14_v3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wd14_model(tmp_path_factory.mktemp("wd-v3"), dynamic_batch=True)
