"""The installed package: version, type stubs that cover the native module,
and docstrings (with tensor shapes) on the public API."""

import ast
import importlib.metadata
import inspect
import pathlib

import canopy
from canopy import _canopy

PACKAGE = pathlib.Path(canopy.__file__).parent


def test_version_matches_the_cmake_project():
    assert canopy.__version__ == importlib.metadata.version("canopy")


def test_imports_without_a_gpu_and_without_torch_loaded():
    import subprocess
    import sys

    code = "import sys, canopy; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_stubs_cover_the_native_module():
    stub = PACKAGE / "_canopy.pyi"
    assert stub.is_file() and (PACKAGE / "py.typed").is_file()
    tree = ast.parse(stub.read_text())
    top = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    public = {n for n in dir(_canopy) if not n.startswith("_")}
    assert public <= top, f"{public - top} missing from the stub"
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for name, node in classes.items():
        members = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
        native = {m for m in vars(getattr(_canopy, name)) if not m.startswith("_")}
        if name != "ErrorKind":
            assert native <= members, f"{name}: {native - members} missing from the stub"


def test_public_api_is_documented():
    for name in canopy.__all__:
        obj = getattr(canopy, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"canopy.{name} has no docstring"
    shapes = "[batch, num_qo_heads, head_dim]"
    assert shapes in canopy.Plan.run.__doc__
    assert shapes in canopy.AttentionSpec.__doc__
    assert "[batch, max_pages]" in canopy.plan.__doc__
