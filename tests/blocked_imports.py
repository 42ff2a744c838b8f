"""Python source that makes a subprocess behave as a machine without some packages: an import hook refusing them."""

from __future__ import annotations


def refusing(blocked: tuple[str, ...]) -> str:
    """A prelude for `python -c`: importing any of `blocked` (or a submodule) raises ImportError naming it."""
    return f"""
import importlib.abc, sys
blocked = {blocked!r}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"blocked in this test: {{name}}")
        return None

sys.meta_path.insert(0, Refuse())
"""
