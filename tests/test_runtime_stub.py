"""The hand-checked stub ``knowcache/_runtime.pyi`` matches the compiled
``knowcache._runtime``: the same classes, functions, methods and properties,
with the same argument names (read from pybind11's signature docstrings).
Regenerate the stub with pybind11-stubgen when a binding changes."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import knowcache
from knowcache import _runtime

STUB = Path(knowcache.__file__).parent / "_runtime.pyi"
PROPERTY = "property"


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:])
    return parts


def _doc_args(obj, name: str) -> tuple[str, ...] | None:
    """Argument names from pybind11's first docstring line, ``name(a: T, b: T = x) -> R``;
    None for overloaded functions."""
    doc = (inspect.getdoc(obj) or "").splitlines()
    if not doc or not doc[0].startswith(name + "(") or "Overloaded" in doc[0]:
        return None
    line = doc[0][len(name) + 1:]
    depth, end = 1, 0
    for end, c in enumerate(line):
        depth += c in "([{"
        depth -= c in ")]}"
        if depth == 0:
            break
    names = [p.split(":")[0].split("=")[0].strip() for p in _split_top_level(line[:end])]
    return tuple(n for n in names if n and n != "self")


def _stub_args(fn: ast.FunctionDef) -> tuple[str, ...] | str:
    decorators = {ast.unparse(d) for d in fn.decorator_list}
    if "property" in decorators or any(d.endswith(".setter") for d in decorators):
        return PROPERTY
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
    return tuple(n for n in names if n != "self")


def stub_api() -> dict:
    api: dict = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.ClassDef):
            members = {}
            for n in node.body:
                if isinstance(n, ast.FunctionDef):
                    members[n.name] = _stub_args(n)
                elif isinstance(n, ast.AnnAssign):   # stubgen writes some properties so
                    members[ast.unparse(n.target)] = PROPERTY
            api[node.name] = members
        elif isinstance(node, ast.FunctionDef):
            api[node.name] = _stub_args(node)
    return api


def runtime_api() -> dict:
    api: dict = {}
    for name, obj in vars(_runtime).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(obj):
            members = {}
            if issubclass(obj, BaseException):
                api[name] = members
                continue
            for key, value in vars(obj).items():
                if isinstance(value, property):
                    if not key.startswith("_"):
                        members[key] = PROPERTY
                    continue
                fn = value.__func__ if isinstance(value, staticmethod) else value
                if not callable(fn):
                    continue
                args = _doc_args(fn, key)
                # dunders count when pybind11 defines them (a signature in the doc),
                # not the slot wrappers every class has
                if not key.startswith("_") or args is not None:
                    members[key] = args
            api[name] = members
        elif callable(obj):
            api[name] = _doc_args(obj, name)
    return api


def test_the_stub_declares_every_name_the_module_has_and_no_other():
    stub, runtime = stub_api(), runtime_api()
    assert sorted(stub) == sorted(runtime)
    for name, members in runtime.items():
        if isinstance(members, dict):
            assert sorted(stub[name]) == sorted(members), name


def test_the_stub_has_the_modules_argument_names():
    stub, runtime = stub_api(), runtime_api()
    checked = 0
    for name, members in runtime.items():
        pairs = ([(f"{name}.{k}", v, stub[name].get(k)) for k, v in members.items()]
                 if isinstance(members, dict) else [(name, members, stub[name])])
        for where, have, want in pairs:
            if have is None:        # overloaded: the stub lists each overload
                continue
            assert want == have, where
            checked += 1
    assert checked > 100   # every method and property of every class, not a handful


def test_the_stub_lists_its_public_names_in_all():
    tree = ast.parse(STUB.read_text())
    declared = next(ast.literal_eval(n.value) for n in tree.body
                    if isinstance(n, ast.AnnAssign) and ast.unparse(n.target) == "__all__")
    assert sorted(declared) == sorted(stub_api())
