"""Template filters ({ref|name}), braced variables ({$var}) and loops ($each) in the interpolation grammar
(app/engine/expr.py, app/engine/filters.py): parsing, rendering, absent values, key safety, and the generated
code against the interpreted tree."""
import pytest

from app.engine.expr import EachNode, Template, TemplateSyntaxError, compile_value, parse_template
from app.engine.filters import FILTERS
from app.errors import DepotError
from app.stores.blobs import BlobRef
from tests.conftest import Namespaces


def render(source, **ctx):
    return parse_template(source).render(Namespaces(**ctx))


def failure(source, **ctx):
    with pytest.raises(DepotError) as info:
        render(source, **ctx)
    return info.value


def syntax_error(source):
    with pytest.raises(TemplateSyntaxError) as info:
        compile_value(source)
    return str(info.value)


# --- each filter ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, value, expected", [
    ("{x|lower}", "Hello-World", "hello-world"),
    ("{x|upper}", "Hello-World", "HELLO-WORLD"),
    ("{x|lower}", "\u212aelvin", "\u212aelvin"),  # the Kelvin sign is not folded into an ASCII k
    ("{x|upper}", "stra\u00dfe", "STRA\u00dfE"),  # nor sharp s into SS
    ("{x|pep503}", "Foo_Bar..baz", "foo-bar-baz"),
    ("{x|pep503}", "a-_-.b", "a-b"),
    ("{x|pep503}", "requests", "requests"),
    ("{x|urlquote}", "a/b c", "a%2Fb%20c"),
    ("{x|urlquote}", "100%?#&=", "100%25%3F%23%26%3D"),
    ("{x|urlquote}", "A-z_0.9~", "A-z_0.9~"),
    ("{x|urlquote}", "\u00e9", "%C3%A9"),
    ("{x|urlquote_path}", "library/ubuntu 1", "library/ubuntu%201"),
    ("{x|hex_to_base64}", "00ff10", "AP8Q"),
    ("{x|hex_to_base64}", "", ""),
    ("{x|base64_to_hex}", "AP8Q", "00ff10"),
    ("{x|default:stable}", "beta", "beta"),
    ("{x|replace:-:_}", "a-b-c", "a_b_c"),
    ("{x|pep503|replace:-:_}", "Foo.Bar-_baz", "foo_bar_baz"),
    ("{x|replace:.}", "1.0.2", "102"),  # no ':': the text is removed
    ("{x|replace::x}", "a:b", "a:b"),  # nothing to replace
])
def test_filter_gives(source, value, expected):
    assert render(source, fields={"x": value}) == expected


def test_text_filters_read_other_values_as_interpolation_writes_them():
    assert render("{x|upper}", fields={"x": True}) == "TRUE"
    assert render("{x|urlquote}", fields={"x": 12}) == "12"
    assert render("{x|urlquote}", fields={"x": {"b": 1, "a": "/"}}) == "%7B%22a%22%3A%22%2F%22%2C%22b%22%3A1%7D"


def test_hex_and_base64_round_trip_a_digest():
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    encoded = render("{x|hex_to_base64}", fields={"x": digest})
    assert encoded == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert render("{x|base64_to_hex}", fields={"x": encoded}) == digest


@pytest.mark.parametrize("source, value", [
    ("{x|hex_to_base64}", "abc"), ("{x|hex_to_base64}", "zz"), ("{x|hex_to_base64}", "0x00"),
    ("{x|base64_to_hex}", "AP8"), ("{x|base64_to_hex}", "AP8Q!==="), ("{x|base64_to_hex}", "AP-_"),
])
def test_a_filter_refusing_its_input_is_a_400_naming_the_reference(source, value):
    error = failure(source, fields={"x": value})
    assert (error.code, error.status, error.field) == ("INVALID_FILTER_INPUT", 400, "x")
    assert source in error.message


def test_every_filter_is_documented_with_an_example_that_parses():
    for name, decl in FILTERS.items():
        assert decl.doc and decl.example, name
        assert any(name in ref.source for ref in parse_template(decl.example).refs), name


# --- chains ---------------------------------------------------------------------------------------------------

def test_filters_chain_left_to_right():
    assert render("{x|pep503|urlquote}", fields={"x": "Foo_Bar/x"}) == "foo-bar%2Fx"
    assert render("{x|urlquote|upper}", fields={"x": "a/b"}) == "A%2FB"
    assert render("{x|upper|urlquote}", fields={"x": "a/b"}) == "A%2FB"


def test_filters_run_after_the_slice():
    digest = "sha256:" + "ab" * 32
    assert render("{d:7:4|upper}", fields={"d": digest}) == "ABAB"
    assert render("{$blob.digest:7:64|hex_to_base64}", vars={"blob": BlobRef("s", digest, 1, "/x")}) == \
        "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="


def test_a_filtered_lone_reference_keeps_the_filters_type():
    assert render("{x|default:1}", fields={}) == "1"  # the default is text
    assert render("{$x|default:1}", vars={"x": 7}) == 7  # a present value is untouched


def test_data_filters_take_a_document_apart_keeping_types():
    publish = {"versions": {"1.2.0": {"name": "a", "dist": {"shasum": "ab"}, "scripts": {"x": "y"}}}}
    assert render("{$p.versions|keys}", vars={"p": publish}) == ["1.2.0"]
    assert render("{$p.versions|keys|first}", vars={"p": publish}) == "1.2.0"
    assert render("{$p.versions|values|first}", vars={"p": publish}) == publish["versions"]["1.2.0"]
    manifest = publish["versions"]["1.2.0"]
    assert render("{$m|pick:dist,name,absent}", vars={"m": manifest}) == {"dist": {"shasum": "ab"}, "name": "a"}
    assert render("v={$p.versions|keys|first}", vars={"p": publish}) == "v=1.2.0"
    tags = {"dist-tags": {"beta": "1.2.0"}}
    assert render("{$p|get:dist-tags|keys|first}", vars={"p": tags}) == "beta"
    assert render("{$p|get:nope}", vars={"p": tags}) is None
    assert render("{x|basename}-1.tgz", fields={"x": "@scope/name"}) == "name-1.tgz"
    assert render("{x|basename}", fields={"x": "name"}) == "name"


def test_first_of_an_empty_list_is_absent():
    assert render("x/{$p?|keys|first}", vars={"p": {}}) == "x"
    assert render("{$p|keys|first}", vars={"p": {}}) is None


@pytest.mark.parametrize("source, value", [("{$v|keys}", [1]), ("{$v|values}", "s"), ("{$v|first}", {"a": 1}),
                                           ("{$v|pick:a}", [1])])
def test_data_filters_refuse_the_wrong_shape(source, value):
    error = failure(source, vars={"v": value})
    assert (error.status, error.code) == (400, "INVALID_FILTER_INPUT")


# --- absent values --------------------------------------------------------------------------------------------

def test_absent_optional_value_passes_through_filters():
    assert render("{x?|upper}") is None
    assert render("a/{x?|upper}/b") == "a/b"
    assert render("a/{x?|urlquote}", fields={"x": "y/z"}) == "a/y%2Fz"


def test_null_field_is_absent_for_filters_too():
    assert render("a/{x?|lower}", fields={"x": None}) == "a"
    assert failure("{x|lower}", fields={"x": None}).code == "UNRESOLVED_REFERENCE"


def test_default_fills_an_absent_value():
    assert render("{x|default:stable}") == "stable"
    assert render("{x|default:stable}", fields={"x": None}) == "stable"
    assert render("c={$meta.channel|default:stable}", vars={"meta": None}) == "c=stable"
    assert render("[{x|default:}]") == "[]"
    assert render("{x|default:a:b c}") == "a:b c"  # the argument is everything up to | or }


def test_default_then_filters_and_filters_then_default():
    assert render("{x|default:Stable|lower}") == "stable"
    assert render("{x|lower|default:Stable}") == "Stable"
    assert render("{x|lower|default:Stable}", fields={"x": "BETA"}) == "beta"


def test_required_reference_without_default_still_fails_when_unbound():
    assert failure("{x|lower}").code == "UNRESOLVED_REFERENCE"


def test_reference_with_a_default_may_be_absent():
    assert parse_template("{x|default:y}").refs[0].absent_ok
    assert parse_template("{x?}").refs[0].absent_ok
    assert not parse_template("{x|lower}").refs[0].absent_ok


def test_lenient_render_applies_filters():
    assert parse_template("{x|upper}").render_lenient(Namespaces(fields={"x": "a"})) == "A"
    assert parse_template("{x|upper}").render_lenient(Namespaces()) is None
    assert parse_template("{x|default:d}").render_lenient(Namespaces()) == "d"


# --- braced variables -----------------------------------------------------------------------------------------

def test_braced_variable_reads_the_variable_namespace():
    assert render("{$a}", vars={"a": 5}) == 5
    assert render("{$rows[1].v}.tar.gz", vars={"rows": [{}, {"v": "2.0"}]}) == "2.0.tar.gz"
    assert render("$name.tar.gz", vars={"name": {"tar": {"gz": "path!"}}}) == "path!"  # unbraced reads on
    assert render("{$name}.tar.gz", vars={"name": "pkg"}) == "pkg.tar.gz"


def test_braced_variable_may_be_optional_and_sliced():
    assert render("x/{$m.d?}", vars={"m": {}}) == "x"
    assert render("{$d:0:3}", vars={"d": "abcdef"}) == "abc"


def test_braced_variable_unbound_names_itself():
    error = failure("{$missing|lower}")
    assert error.code == "UNRESOLVED_REFERENCE" and "{$missing|lower}" in error.message


# --- values are never parsed again ----------------------------------------------------------------------------

def test_filtered_values_are_not_rescanned():
    fields = {"a": "{other}|upper", "other": "SECRET"}
    assert render("x/{a|lower}", fields=fields) == "x/{other}|upper"
    assert render("{a|default:$secret}", vars={"secret": "no"}) == "$secret"  # an argument is literal text


# --- malformed filters ----------------------------------------------------------------------------------------

def test_unknown_filter_is_a_syntax_error_naming_reference_and_filter():
    message = syntax_error({"body": ["ok", "{name|shout}"]})
    assert "{name|shout}" in message and "unknown filter 'shout'" in message and "pep503" in message


def test_filter_argument_where_none_is_taken():
    assert "takes no argument" in syntax_error("{name|lower:x}")


def test_filter_without_the_argument_it_needs():
    assert "needs an argument" in syntax_error("{name|default}")


@pytest.mark.parametrize("source", ["{x|}", "{x|lower|}", "{x|1a}", "{x|low er}", "{x|lower?}", "{x|default:a{b}",
                                    "{$}", "{$1}", "{$a.}", "{x:1|lower}", "{|lower}"])
def test_malformed_filtered_reference(source):
    with pytest.raises(TemplateSyntaxError):
        parse_template(source)


@pytest.mark.parametrize("source", ["{request}", "{request.path}", "{request.base_url.x}", "{request.headers}"])
def test_request_exposes_only_base_url(source):
    assert "base_url" in syntax_error(source)


# --- storage keys ---------------------------------------------------------------------------------------------

def key(source, **fields):
    return parse_template(source).render_key(Namespaces(fields=fields))


def test_urlquote_stores_a_value_holding_a_slash_as_one_segment():
    assert key("repo/{ns}/{name|urlquote}", ns="acme", name="library/ubuntu") == "repo/acme/library%2Fubuntu"


def test_urlquote_keeps_distinct_values_distinct():
    assert key("k/{n|urlquote}", n="a/b") != key("k/{n|urlquote}", n="a%2Fb")


@pytest.mark.parametrize("value", ["a/b", ".", "..", ""])
def test_key_checks_what_the_filters_made(value):
    with pytest.raises(DepotError) as info:
        key("k/{n|urlquote_path}", n=value)
    assert info.value.code == "INVALID_KEY_SEGMENT"


@pytest.mark.parametrize("value", [".", ".."])
def test_urlquote_does_not_hide_dot_segments(value):
    with pytest.raises(DepotError) as info:
        key("k/{n|urlquote}", n=value)
    assert info.value.code == "INVALID_KEY_SEGMENT"


# --- loops ----------------------------------------------------------------------------------------------------

ROWS = [{"filename": "pkg-1.0.tar.gz", "version": "1.0", "digest": "sha256:" + "a" * 64},
        {"filename": "pkg 2.0.whl", "version": "2.0", "digest": "sha256:" + "b" * 64}]
FILES = {"$each": "$rows", "as": "row", "emit": {"filename": "$row.filename", "url": "/f/{$row.filename|urlquote}",
                                                 "hashes": {"sha256": "{$row.digest:7:64}"}}}


def test_each_renders_a_list_in_the_items_order():
    assert compile_value(FILES).render(Namespaces(vars={"rows": ROWS})) == [
        {"filename": "pkg-1.0.tar.gz", "url": "/f/pkg-1.0.tar.gz", "hashes": {"sha256": "a" * 64}},
        {"filename": "pkg 2.0.whl", "url": "/f/pkg%202.0.whl", "hashes": {"sha256": "b" * 64}}]


def test_each_with_a_key_renders_an_object():
    node = compile_value({"$each": "$rows", "as": "r", "key": "{$r.version}", "emit": "$r.filename"})
    assert node.render(Namespaces(vars={"rows": ROWS})) == {"1.0": "pkg-1.0.tar.gz", "2.0": "pkg 2.0.whl"}


def test_each_key_is_text_and_a_later_item_wins():
    node = compile_value({"$each": "$rows", "as": "r", "key": "$r.n", "emit": "$r.v"})
    rows = [{"n": 1, "v": "a"}, {"n": 2, "v": "b"}, {"n": 1, "v": "c"}]
    assert node.render(Namespaces(vars={"rows": rows})) == {"1": "c", "2": "b"}


def test_each_key_rendering_nothing_is_an_error():
    node = compile_value({"$each": "$rows", "as": "r", "key": "{$r.n?}", "emit": "$r"})
    with pytest.raises(DepotError) as info:
        node.render(Namespaces(vars={"rows": [{}]}))
    assert info.value.code == "INVALID_TEMPLATE_VALUE"


def test_each_inside_a_document_reads_the_request_too():
    node = compile_value({"name": "{project|pep503}", "files": FILES, "count": "$total"})
    value = node.render(Namespaces(fields={"project": "My_Pkg"}, vars={"rows": ROWS[:1], "total": 1}))
    assert value["name"] == "my-pkg" and value["count"] == 1 and len(value["files"]) == 1


def test_each_reads_the_enclosing_namespaces_inside():
    node = compile_value({"$each": "$rows", "as": "row",
                          "emit": "{principal.sub}:{ns}:{$row.version}:{$prefix}"})
    ctx = Namespaces(fields={"ns": "acme"}, vars={"rows": ROWS, "prefix": "p"}, principal={"sub": "bob"})
    assert node.render(ctx) == ["bob:acme:1.0:p", "bob:acme:2.0:p"]


def test_nested_each():
    node = compile_value({"$each": "$groups", "as": "g", "key": "{$g.name}",
                          "emit": {"$each": "$g.items", "as": "i", "emit": "{$g.name}/{$i}"}})
    groups = [{"name": "a", "items": [1, 2]}, {"name": "b", "items": []}]
    assert node.render(Namespaces(vars={"groups": groups})) == {"a": ["a/1", "a/2"], "b": []}


def test_each_leaves_the_request_variables_alone():
    variables = {"rows": ROWS, "row": "outer"}
    node = compile_value({"inner": {"$each": "$rows", "as": "row", "emit": "$row.version"}, "outer": "$row"})
    assert node.render(Namespaces(vars=variables)) == {"inner": ["1.0", "2.0"], "outer": "outer"}
    assert variables == {"rows": ROWS, "row": "outer"}


@pytest.mark.parametrize("rows", [None, []])
def test_each_over_nothing_is_empty(rows):
    assert compile_value(FILES).render(Namespaces(vars={"rows": rows})) == []
    assert compile_value({"$each": "$m.files?", "as": "f", "emit": "$f"}).render(Namespaces(vars={"m": {}})) == []
    assert compile_value({"$each": "$rows", "as": "r", "key": "$r", "emit": 1}).render(
        Namespaces(vars={"rows": rows})) == {}


def test_each_over_an_unbound_list_is_unresolved():
    with pytest.raises(DepotError) as info:
        compile_value(FILES).render(Namespaces())
    assert info.value.code == "UNRESOLVED_REFERENCE"


def test_each_over_something_else_is_an_error():
    with pytest.raises(DepotError) as info:
        compile_value(FILES).render(Namespaces(vars={"rows": {"a": 1}}))
    assert (info.value.code, info.value.status) == ("INVALID_TEMPLATE_VALUE", 500)
    assert "$rows" in info.value.message


def test_each_refs_leave_out_the_loop_variable():
    node = compile_value({"$each": "$rows", "as": "row", "key": "{$row.v}-{ns}",
                          "emit": {"a": "$row.x", "b": "$other", "c": "{$row|lower}"}})
    assert isinstance(node, EachNode)
    assert sorted(r.source for r in node.refs) == ["$other", "$rows", "{ns}"]


def test_the_loop_variable_of_the_source_is_not_the_loops():
    node = compile_value({"$each": "$row", "as": "row", "emit": "$row"})
    assert [r.source for r in node.refs] == ["$row"]


def test_each_lenient_render():
    node = compile_value({"$each": "$rows", "as": "r", "emit": "$r.missing"})
    assert node.render_lenient(Namespaces(vars={"rows": [{}, {}]})) == [None, None]
    assert node.render_lenient(Namespaces()) == []


@pytest.mark.parametrize("spec, words", [
    ({"$each": "$rows", "emit": "$row"}, "\"as\""),
    ({"$each": "$rows", "as": "1row", "emit": "$row"}, "\"as\""),
    ({"$each": "$rows", "as": "a b", "emit": "$row"}, "\"as\""),
    ({"$each": "$rows", "as": "row"}, "\"emit\""),
    ({"$each": "$rows", "as": "row", "emit": "$row", "where": {}}, "'where'"),
    ({"$each": ["a"], "as": "row", "emit": "$row"}, "list"),
    ({"$each": "$rows", "as": "row", "emit": "$row", "key": {"v": "$row.v"}}, "key"),
    ({"$each": "$rows", "as": "row", "emit": "{$row|nope}"}, "nope"),
    ({"$each": "$rows", "as": "row", "emit": "$row", "key": "{$row"}, "malformed"),
    ({"$each": "{rows", "as": "row", "emit": "$row"}, "malformed"),
])
def test_malformed_each(spec, words):
    assert words in syntax_error({"body": spec})


# --- generated code does what the tree does -------------------------------------------------------------------

def outcome(render, ctx):
    try:
        return "value", render(ctx)
    except DepotError as exc:
        return "error", exc.code, exc.status, exc.message, exc.field


SHAPES = {"text": "Foo_Bar/x", "digest": "sha256:" + "0f" * 32, "hex": "00ff", "null": None, "int": 3,
          "dict": {"v": "A b"}, "list": ["X/y"], "blob": BlobRef("s", "sha256:" + "ab" * 32, 1, "/x")}
FILTERED = ["{$x|lower}", "{$x|pep503|urlquote}", "{$x?|upper}", "{$x|default:D|lower}", "{$x.v|urlquote}",
            "{$x[0]|urlquote_path}", "{$x|hex_to_base64}", "{$x.digest|upper}", "{$missing|default:d}",
            "{$missing?|lower}", "{x|lower}", "{x?|upper}", "{x|default:none}", "{x.v|urlquote}"]


@pytest.fixture
def generating(monkeypatch):
    monkeypatch.setenv("DEPOT_CODEGEN", "on")


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("source", FILTERED)
def test_generated_filtered_reference_matches_the_interpreted_one(generating, source, shape):
    template = parse_template(source)
    assert isinstance(template, Template) and template.single.generated
    ctx = Namespaces(fields={"x": SHAPES[shape]}, vars={"x": SHAPES[shape]})
    assert template.render is not template.single.resolve_interpreted  # generated indeed
    assert outcome(template.render, ctx) == outcome(template.single.resolve_interpreted, ctx)
    assert outcome(template.single.resolve_lenient, ctx)[1:] == outcome(template.render_lenient, ctx)[1:]


@pytest.mark.parametrize("rows", [ROWS, [], None, ({"version": "t"},), [{"version": None}], "text"])
def test_generated_document_with_loops_matches_the_interpreted_one(generating, rows):
    node = compile_value({"files": FILES, "versions": {"$each": "$rows", "as": "r", "key": "{$r.version?|lower}",
                                                       "emit": {"v": "{$r.version|default:none}"}}})
    ctx = Namespaces(vars={"rows": rows})
    assert outcome(node.render, ctx) == outcome(node.render_interpreted, ctx)


def test_loop_bodies_are_generated(generating):
    node = compile_value(FILES)
    assert hasattr(node.body.render, "generated_source")


# --- the request ----------------------------------------------------------------------------------------------

def test_request_base_url_reads_the_request():
    from app.engine.context import RequestData
    request = RequestData(base_url="https://pkgs.example.com/depot")
    assert render("{request.base_url}/simple/{p|pep503}/", fields={"p": "A_B"}, request=request) == \
        "https://pkgs.example.com/depot/simple/a-b/"


def test_request_base_url_without_a_request_is_unresolved():
    from app.engine.context import RequestData
    assert failure("x{request.base_url}", request=RequestData()).code == "UNRESOLVED_REFERENCE"
    assert failure("{request.base_url}").code == "UNRESOLVED_REFERENCE"
