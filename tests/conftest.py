"""Fixtures shared by the project's tests: small real data.db files built from the bundled demo posts."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import build_wd14_model

from tagger_eval.run.evaluation import DEFAULT_DATASET


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
