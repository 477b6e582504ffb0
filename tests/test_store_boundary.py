"""The storage boundary holds: outside app/stores/, no module imports rocksdict or a store implementation's
internals, builds a store key, parses a stored row or opens a blob's file. They use app/stores/interfaces.py."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORES = ROOT / "app" / "stores"

FORBIDDEN_MODULES = {"rocksdict", "app.stores.state", "app.stores.cache"}
KEY_BUILDERS = {"kv_key", "encode_value", "encode_str", "encode_int", "encode_uint", "encode_semver", "encode_version",
                "descending", "prefix_of", "entry_key", "codec", "path_for", "SEQ_WIDTH", "CURSOR_KEY", "StateStore",
                "FileBlobStore", "CacheStore"}
RAW_ACCESS = {"scan", "kv_get", "kv_put", "kv_delete", "kv_put_if_absent"}  # the embedded store's byte-key methods
FILE_CALLS = {"open", "stat", "unlink", "utime", "ServedFile"}


def sources():
    yield from (path for path in sorted((ROOT / "app").rglob("*.py")) if STORES not in path.parents)
    yield ROOT / "operations.py"
    yield ROOT / "models.py"


def crossings(tree):
    """(line, what) for every way ``tree`` reaches past the store interfaces."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, "import " + a.name) for a in node.names if _forbidden_module(a.name))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if _forbidden_module(module):
                yield node.lineno, "from %s import" % module
            yield from ((node.lineno, "imports " + a.name) for a in node.names if a.name in KEY_BUILDERS)
        elif isinstance(node, ast.Attribute) and node.attr in KEY_BUILDERS | {"rowmap_head"}:
            yield node.lineno, "." + node.attr
        elif isinstance(node, ast.Name) and node.id in KEY_BUILDERS:
            yield node.lineno, node.id
        elif isinstance(node, ast.Call):
            yield from _call_crossings(node)
        elif isinstance(node, ast.Subscript) and _is_loads(node.value):
            yield node.lineno, "a stored row parsed (loads(...)[...])"


def _forbidden_module(name):
    return any(name == module or name.startswith(module + ".") for module in FORBIDDEN_MODULES)


def _call_crossings(call):
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if isinstance(func, ast.Attribute) and name in RAW_ACCESS:
        yield call.lineno, "raw store access ." + name
    if name in FILE_CALLS and call.args and isinstance(call.args[0], ast.Attribute) and call.args[0].attr == "path":
        yield call.lineno, "a blob file opened by its path (%s(....path))" % name


def _is_loads(node):
    return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "loads"


def test_nothing_outside_app_stores_reaches_past_the_store_interfaces():
    found = []
    for path in sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found += ["%s:%d %s" % (path.relative_to(ROOT), line, what) for line, what in crossings(tree)]
    assert found == [], "reaches past app/stores/interfaces.py:\n" + "\n".join(found)


def test_the_boundary_check_sees_each_kind_of_crossing():
    crossing = '''
import rocksdict
from app.stores.state import kv_key
raw = engine.state.get(kv_key("meta", "k"))
rows = [json.loads(raw)[1] for _, raw in engine.state.scan(prefix)]
handle = open(blob.path, "rb")
head = index.rowmap_head + key.prefix_of(values)
'''
    kinds = {what.split(" ")[0] for _, what in crossings(ast.parse(crossing))}
    assert {"import", "from", "kv_key", "raw", "a", ".rowmap_head", ".prefix_of"} <= kinds
