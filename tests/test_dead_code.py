"""Dead code stays out: no module of the server imports a name it never uses (an import kept for its side effect
says so with a noqa comment)."""
import ast
from pathlib import Path

from tests.conftest import ROOT

SOURCES = sorted((ROOT / "app").rglob("*.py")) + [ROOT / "operations.py", ROOT / "models.py"]


def annotation_names(tree):
    """Names a module uses only inside string annotations ("ExecutionContext", Callable[["Scope"], None])."""
    holders = [node.annotation for node in ast.walk(tree) if isinstance(node, (ast.arg, ast.AnnAssign))]
    holders += [node.returns for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    holders += [node.slice for node in ast.walk(tree) if isinstance(node, ast.Subscript)]
    names = set()
    for holder in filter(None, holders):
        for node in ast.walk(holder):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    names |= {n.id for n in ast.walk(ast.parse(node.value, mode="eval")) if isinstance(n, ast.Name)}
                except SyntaxError:
                    pass
    return names


def unused_imports(path, root=ROOT):
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | annotation_names(tree)
    exported = {elt.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                for elt in getattr(node.value, "elts", ()) if isinstance(elt, ast.Constant)}
    unused = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or "noqa" in lines[node.lineno - 1] or \
                getattr(node, "module", None) == "__future__":
            continue
        for alias in node.names:
            name = (alias.asname or alias.name).split(".")[0]
            if name not in used and name not in exported:
                unused.append("%s:%d %s" % (path.relative_to(root), node.lineno, name))
    return unused


def test_no_module_imports_a_name_it_never_uses():
    assert [hit for path in SOURCES for hit in unused_imports(path)] == []


def test_the_check_finds_an_unused_import(tmp_path):
    module = Path(tmp_path) / "module.py"
    module.write_text("import os\nimport sys  # noqa: F401\nfrom json import dumps, loads\n\nloads('1')\n")
    assert unused_imports(module, tmp_path) == ["module.py:1 os", "module.py:3 dumps"]
