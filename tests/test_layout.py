"""The layout holds: app/'s import graph has no cycle, and the dependency between app/ and the root modules the
user named (operations.py, models.py) runs one way: they import app/, app/ reaches operations.py only through
its one registration point (app.engine.opspec.load_vocabulary) and never imports it for a side effect.

The graph is read from the source (ast): imports at module level and inside functions alike, since a function's
import closes a cycle as surely when it runs. Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOT_MODULES = ("operations", "models")
REGISTRATION_POINT = ("app.engine.opspec", "load_vocabulary")


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources():
    paths = sorted((ROOT / "app").rglob("*.py")) + [ROOT / ("%s.py" % name) for name in ROOT_MODULES]
    return {module_name(path): path for path in paths}


def _type_checking_only(node):
    if not isinstance(node, ast.If):
        return False
    return "TYPE_CHECKING" in (getattr(node.test, "id", None), getattr(node.test, "attr", None))


def imports(tree):
    """(module, names, enclosing function or None) for every import that can run, in source order: ``names`` is
    what a ``from module import ...`` takes (a name may be a submodule), empty for ``import module``."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, (), function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, tuple(alias.name for alias in child.names), function))
            visit(child, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function)

    visit(tree, None)
    return found


def import_graph():
    """{module: {(module it imports, enclosing function)}} over app/, operations.py and models.py: ``from package
    import name`` imports the submodule when ``name`` is one, else the package itself."""
    modules = sources()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for module, names, function in imports(ast.parse(path.read_text(), str(path))):
            submodules = {"%s.%s" % (module, n) for n in names} & modules.keys()
            targets = submodules | ({module} if len(submodules) < len(names) or not names else set())
            edges |= {(target, function) for target in targets if target in modules and target != name}
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}

    def visit(module, trail):
        state[module] = "open"
        trail.append(module)
        for target in sorted({target for target, _ in graph.get(module, ())}):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target]
            if target not in state:
                cycle = visit(target, trail)
                if cycle:
                    return cycle
        trail.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                return cycle
    return None


def test_the_import_graph_of_app_has_no_cycle():
    """Besides the one sanctioned edge back: load_vocabulary's import of operations.py (which imports the engine),
    run once both are loaded, to hand the ops to the engine's registry."""
    graph = import_graph()
    module, function = REGISTRATION_POINT
    graph[module] = graph[module] - {("operations", function)}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import():
    """The check itself: a function-level import back to a module that imports this one is a cycle."""
    tree = ast.parse("import app.a\n\ndef later():\n    from app.b import thing\n")
    assert imports(tree) == [("app.a", (), None), ("app.b", ("thing",), "later")]
    assert find_cycle({"app.a": {("app.b", "later")}, "app.b": {("app.a", None)}}) == ["app.a", "app.b", "app.a"]
    assert find_cycle({"app.a": {("app.b", None)}, "app.b": set()}) is None


def test_models_import_nothing_from_app():
    graph = import_graph()
    assert {target for target, _ in graph["models"]} == set()


def test_app_reaches_operations_only_through_the_registration_point():
    graph = import_graph()
    reaching = sorted((module, function) for module, edges in graph.items() if module.startswith("app")
                      for target, function in edges if target == "operations")
    assert reaching == [REGISTRATION_POINT]  # one import, inside that function: none at module level


def test_importing_operations_registers_nothing_until_the_vocabulary_is_loaded():
    """Registration is explicit: the engine's registry stays empty until load_vocabulary hands it the ops."""
    run_fresh("import operations\n"
              "from app.engine.opspec import REGISTRY, load_vocabulary\n"
              "assert REGISTRY == {}, sorted(REGISTRY)\n"
              "assert load_vocabulary() is REGISTRY and set(REGISTRY) == set(operations.VOCABULARY.decls)\n"
              "assert 'respond.json' in REGISTRY\n")


def test_each_layer_is_a_package_of_app():
    for layer in ("engine", "stores", "http", "identity", "repository", "tools"):
        assert (ROOT / "app" / layer / "__init__.py").is_file(), layer
    flat = sorted(path.name for path in (ROOT / "app").glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "errors.py", "metrics.py"]


def test_the_engine_the_stores_identity_and_the_ops_load_without_flask_or_the_service():
    run_fresh("import sys, operations, app.engine.compiler, app.engine.run, app.identity.auth, app.identity.access\n"
              "import app.stores.registry\n"
              "loaded = sorted(m for m in sys.modules\n"
              "                if m == 'flask' or m.startswith(('app.repository', 'app.http.app')))\n"
              "assert not loaded, loaded\n")


def run_fresh(script):
    """Run ``script`` in a new interpreter (this one has imported everything already); it asserts."""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# From the bottom: a package may import its own modules and those of the packages before it, never after.
LAYERS = ("app.errors", "app.metrics", "app.stores", "app.identity", "app.engine", "app.repository", "app.http", "app.tools")


def layer_of(module):
    """The index in LAYERS of the package holding ``module``; None for app/__init__ and app/__main__."""
    for i, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def edges_against_the_layers(graph):
    return sorted((module, target) for module, edges in graph.items() for target, _ in edges
                  if None not in (layer_of(module), layer_of(target)) and layer_of(target) > layer_of(module))


def test_each_package_imports_only_the_packages_below_it():
    graph = {module: edges for module, edges in import_graph().items() if module.startswith("app.")}
    assert edges_against_the_layers(graph) == []


def test_the_layer_check_sees_an_import_upward():
    graph = {"app.stores.blobs": {("app.engine.expr", None)}, "app.engine.run": {("app.stores.blobs", None)}}
    assert edges_against_the_layers(graph) == [("app.stores.blobs", "app.engine.expr")]
