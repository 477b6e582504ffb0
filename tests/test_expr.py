"""The interpolation grammar (app/engine/expr.py): parsing, rendering, escapes, key safety and compiled value trees."""
import pytest

from app.errors import DepotError
from tests.conftest import Namespaces
from app.engine.expr import Const, DictNode, ListNode, Template, TemplateSyntaxError, compile_value, parse_template


def render(source, **ctx):
    return parse_template(source).render(Namespaces(**ctx))


def unresolved(source, **ctx):
    with pytest.raises(DepotError) as info:
        render(source, **ctx)
    assert info.value.code == "UNRESOLVED_REFERENCE"
    return info.value


# --- fields ---------------------------------------------------------------------------------------------------

def test_field_reference_is_substituted():
    assert render("artifact/{ns}/{name}", fields={"ns": "acme", "name": "hello"}) == "artifact/acme/hello"


def test_absent_optional_field_drops_its_preceding_slash():
    fields = {"ns": "x", "version": "1.0.0"}
    assert render("artifact/{ns}/{version}/{variant?}", fields=fields) == "artifact/x/1.0.0"


def test_present_optional_field_keeps_its_slash():
    fields = {"ns": "x", "version": "1.0.0", "variant": "linux"}
    assert render("artifact/{ns}/{version}/{variant?}", fields=fields) == "artifact/x/1.0.0/linux"


def test_null_optional_field_counts_as_absent():
    assert render("a/{ns}/{variant?}", fields={"ns": "x", "variant": None}) == "a/x"


def test_absent_optional_without_slash_renders_nothing_in_its_place():
    assert render("v{variant?}-end", fields={}) == "v-end"


def test_lone_absent_optional_renders_none():
    assert render("{variant?}") is None


def test_principal_root_reads_the_principal():
    assert render("by {principal.sub}", principal={"sub": "alice", "scopes": ["read"]}) == "by alice"


def test_event_root_reads_the_event():
    payload = {"namespace": "acme", "size": 3}
    assert render("{event.payload}", event={"payload": payload}) == payload


def test_dotted_field_path_descends_into_the_value():
    assert render("{body.target.version}", fields={"body": {"target": {"version": "2.0.0"}}}) == "2.0.0"


def test_digest_slices_are_start_and_length():
    fields = {"digest": "abcdef0123"}
    assert render("sha256/{digest:0:2}/{digest:2:2}/{digest}", fields=fields) == "sha256/ab/cd/abcdef0123"


def test_slice_past_the_end_is_truncated():
    assert render("{digest:4:10}", fields={"digest": "abcdef"}) == "ef"


# --- variables ------------------------------------------------------------------------------------------------

def test_var_reference_is_substituted():
    assert render("size=$size", vars={"size": 42}) == "size=42"


def test_var_path_descends_into_mappings():
    assert render("$meta.blob_digest", vars={"meta": {"blob_digest": "sha256:00"}}) == "sha256:00"


def test_var_index_then_path():
    rows = [{"version": "2.0.0"}, {"version": "1.0.0"}]
    assert render("$rows[0].version", vars={"rows": rows}) == "2.0.0"
    assert render("$rows[1].version", vars={"rows": rows}) == "1.0.0"


def test_var_embedded_in_quotes():
    assert render("\"$meta.blob_digest\"", vars={"meta": {"blob_digest": "sha256:ab"}}) == "\"sha256:ab\""


def test_var_name_ends_at_first_non_name_character():
    assert render("$a-$b/$c.", vars={"a": 1, "b": "two", "c": "x"}) == "1-two/x."


def test_exactly_one_reference_keeps_int_type():
    assert render("$size", vars={"size": 1024}) == 1024


def test_exactly_one_reference_keeps_dict_type():
    value = {"a": [1, 2], "b": None}
    assert render("$obj", vars={"obj": value}) == value
    assert render("{obj}", fields={"obj": value}) == value


def test_exactly_one_reference_keeps_bool_and_list_types():
    assert render("$hit", vars={"hit": False}) is False
    assert render("$rows", vars={"rows": []}) == []


def test_embedded_non_strings_are_stringified():
    assert render("n=$n", vars={"n": 7}) == "n=7"
    assert render("b=$b", vars={"b": True}) == "b=true"
    assert render("d=$d", vars={"d": {"y": 2, "x": 1}}) == 'd={"x":1,"y":2}'


# --- escapes --------------------------------------------------------------------------------------------------

def test_doubled_braces_and_dollars_are_literals():
    assert render("{{ns}} costs $$5 }}") == "{ns} costs $5 }"


def test_escape_next_to_a_reference():
    assert render("{{{ns}}}", fields={"ns": "x"}) == "{x}"
    assert render("$$$n", vars={"n": 3}) == "$3"


def test_escaped_template_is_constant():
    template = parse_template("{{a}} and $$b")
    assert template.is_constant
    assert template.refs == []


def test_lone_dollar_not_followed_by_a_name_is_literal():
    assert render("price: 5$ or $1") == "price: 5$ or $1"


# --- no re-scanning -------------------------------------------------------------------------------------------

def test_substituted_field_value_is_not_rescanned():
    fields = {"a": "{other}", "other": "SECRET"}
    assert render("x/{a}", fields=fields) == "x/{other}"


def test_substituted_var_value_is_not_rescanned():
    assert render("v=$x", vars={"x": "$y", "y": "SECRET"}) == "v=$y"
    assert render("$x", vars={"x": "$y", "y": "SECRET"}) == "$y"


def test_substituted_escape_sequences_stay_doubled():
    assert render("<{a}>", fields={"a": "{{$$}}"}) == "<{{$$}}>"


# --- unresolvable references ----------------------------------------------------------------------------------

def test_missing_field_raises_unresolved_reference():
    error = unresolved("artifact/{ns}/{missing}", fields={"ns": "x"})
    assert error.status == 500
    assert "{missing}" in error.message


def test_missing_lone_field_raises_rather_than_returning_none():
    unresolved("{missing}")


def test_null_required_field_raises_unresolved_reference():
    unresolved("a/{ns}", fields={"ns": None})


def test_missing_var_raises_unresolved_reference():
    error = unresolved("digest=$digest")
    assert "$digest" in error.message


def test_missing_var_path_raises_unresolved_reference():
    unresolved("$meta.blob_digest", vars={"meta": {"other": 1}})
    unresolved("x$meta.blob_digest", vars={"meta": None})


def test_index_out_of_range_raises_unresolved_reference():
    unresolved("$rows[0].version", vars={"rows": []})


def test_absent_principal_raises_unresolved_reference():
    unresolved("{principal.sub}")
    unresolved("by {principal.sub}", principal={"scopes": []})


def test_absent_event_raises_unresolved_reference():
    unresolved("{event.payload}")


def test_lenient_render_reads_unbound_as_none():
    template = parse_template("$meta.blob_digest")
    assert template.render_lenient(Namespaces()) is None
    assert template.render_lenient(Namespaces(vars={"meta": {"blob_digest": "d"}})) == "d"


# --- malformed templates --------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "{", "}", "x{a", "a}b", "{}", "{1abc}", "{a.}", "{a b}", "{a:1}", "{a:x:2}", "{a?b}", "{{a}", "artifact/{ns/{name}",
])
def test_malformed_template_raises_syntax_error(source):
    with pytest.raises(TemplateSyntaxError):
        parse_template(source)


def test_syntax_error_names_the_offset():
    with pytest.raises(TemplateSyntaxError, match="offset 4"):
        parse_template("abc/{ns")


def test_compile_value_rejects_malformed_strings_deep_in_a_tree():
    with pytest.raises(TemplateSyntaxError):
        compile_value({"a": [1, {"b": "ok/{bad"}]})


# --- storage keys ---------------------------------------------------------------------------------------------

def key(source, **fields):
    return parse_template(source).render_key(Namespaces(fields=fields))


def bad_key(source, **fields):
    with pytest.raises(DepotError) as info:
        key(source, **fields)
    assert info.value.code == "INVALID_KEY_SEGMENT"
    assert info.value.status == 400
    return info.value


def test_render_key_accepts_ordinary_segments():
    assert key("artifact/{ns}/{version}", ns="acme", version="1.0.0-rc.1+b.2") == "artifact/acme/1.0.0-rc.1+b.2"


def test_render_key_drops_absent_optional_segment():
    assert key("artifact/{ns}/{variant?}", ns="acme") == "artifact/acme"


def test_render_key_rejects_slash():
    error = bad_key("artifact/{ns}/{name}", ns="acme", name="a/b")
    assert error.field == "name"


def test_render_key_rejects_nul():
    bad_key("artifact/{ns}", ns="ac\x00me")


@pytest.mark.parametrize("value", [".", ".."])
def test_render_key_rejects_dot_segments(value):
    bad_key("artifact/{ns}/x", ns=value)


def test_render_key_rejects_dot_segments_in_optional_position():
    bad_key("artifact/{ns}/{variant?}", ns="acme", variant="..")


def test_render_key_still_raises_for_unbound_reference():
    with pytest.raises(DepotError) as info:
        key("artifact/{ns}/{name}", ns="acme")
    assert info.value.code == "UNRESOLVED_REFERENCE"


# --- compiled value trees -------------------------------------------------------------------------------------

def test_constant_string_compiles_to_const_with_escapes_applied():
    node = compile_value("{{literal}} $$")
    assert isinstance(node, Const)
    assert node.render(Namespaces()) == "{literal} $"


def test_constant_tree_compiles_to_one_const():
    value = {"status": 201, "ok": True, "tags": ["a", "b"], "nested": {"x": None, "y": "{{z}}"}}
    node = compile_value(value)
    assert isinstance(node, Const)
    assert node.render(Namespaces()) == {"status": 201, "ok": True, "tags": ["a", "b"],
                                         "nested": {"x": None, "y": "{z}"}}
    assert node.refs == ()


@pytest.mark.parametrize("value", [0, 1.5, True, None])
def test_scalars_compile_to_const(value):
    node = compile_value(value)
    assert isinstance(node, Const)
    assert node.render(Namespaces()) == value


def test_dict_with_references_renders_each_member():
    node = compile_value({"ok": True, "digest": "$digest", "size": "$size", "who": "{principal.sub}"})
    assert isinstance(node, DictNode)
    ctx = Namespaces(vars={"digest": "sha256:ab", "size": 12}, principal={"sub": "bob"})
    assert node.render(ctx) == {"ok": True, "digest": "sha256:ab", "size": 12, "who": "bob"}


def test_constant_subtree_inside_dynamic_dict_is_const():
    node = compile_value({"headers": {"Content-Type": "application/octet-stream"}, "body": "$blob"})
    assert isinstance(node, DictNode)
    members = dict(node.items)
    assert isinstance(members["headers"], Const)
    assert isinstance(members["body"], Template)


def test_list_with_references_renders_each_item():
    node = compile_value(["$a", 2, ["{f}", "c"], {"k": "const"}])
    assert isinstance(node, ListNode)
    assert isinstance(node.nodes[1], Const) and isinstance(node.nodes[3], Const)
    assert node.render(Namespaces(fields={"f": "F"}, vars={"a": [1]})) == [[1], 2, ["F", "c"], {"k": "const"}]


def test_tree_collects_every_reference():
    node = compile_value({"a": "$x", "b": ["{y}", {"c": "pre-$z.w-{principal.sub}"}]})
    assert sorted(ref.source for ref in node.refs) == ["$x", "$z.w", "{principal.sub}", "{y}"]


def test_tree_render_raises_for_unbound_member():
    node = compile_value({"a": "$x", "b": "$missing"})
    with pytest.raises(DepotError) as info:
        node.render(Namespaces(vars={"x": 1}))
    assert info.value.code == "UNRESOLVED_REFERENCE"


def test_tree_lenient_render_reads_unbound_members_as_none():
    node = compile_value({"a": "$x", "b": ["$missing"]})
    assert node.render_lenient(Namespaces(vars={"x": 1})) == {"a": 1, "b": [None]}


def test_tree_values_are_not_rescanned():
    node = compile_value({"a": "{f}"})
    assert node.render(Namespaces(fields={"f": "$secret"}, vars={"secret": "no"})) == {"a": "$secret"}
