"""`when` conditions (app/engine/conditions.py): every keyword, nesting, lenient operands and load-time errors."""
import pytest

from app.engine.conditions import ConditionError, compile_condition
from tests.conftest import Namespaces

PLACE = "api.routes[1].pipeline[5].args.when"


def holds(spec, **ctx):
    return compile_condition(spec, PLACE)(Namespaces(**ctx))


def load_error(spec):
    with pytest.raises(ConditionError) as info:
        compile_condition(spec, PLACE)
    return info.value


# --- comparisons ----------------------------------------------------------------------------------------------

def test_equals_compares_rendered_operands():
    assert holds({"equals": ["$hit", True]}, vars={"hit": True})
    assert not holds({"equals": ["$hit", True]}, vars={"hit": False})


def test_equals_keeps_operand_types():
    assert holds({"equals": ["$n", 5]}, vars={"n": 5})
    assert not holds({"equals": ["$n", "5"]}, vars={"n": 5})


def test_equals_renders_templates_on_both_sides():
    assert holds({"equals": ["{ns}/{name}", "acme/$n"]}, fields={"ns": "acme", "name": "x"}, vars={"n": "x"})


def test_not_equals():
    assert holds({"not_equals": ["$status", 200]}, vars={"status": 404})
    assert not holds({"not_equals": ["$status", 200]}, vars={"status": 200})


def test_equals_compares_structures():
    assert holds({"equals": ["$obj", {"a": [1, 2]}]}, vars={"obj": {"a": [1, 2]}})
    assert not holds({"equals": ["$obj", {"a": [2, 1]}]}, vars={"obj": {"a": [1, 2]}})


# --- null and empty -------------------------------------------------------------------------------------------

def test_is_null_true_for_bound_null():
    assert holds({"is_null": "$meta"}, vars={"meta": None})


def test_is_null_false_for_falsy_values():
    for value in (0, False, "", [], {}):
        assert not holds({"is_null": "$v"}, vars={"v": value}), value


def test_is_not_null():
    assert holds({"is_not_null": "$meta"}, vars={"meta": {"blob_digest": "d"}})
    assert not holds({"is_not_null": "$meta"}, vars={"meta": None})


@pytest.mark.parametrize("value", [None, [], {}, ""])
def test_is_empty_true_for_empty_values(value):
    assert holds({"is_empty": "$rows"}, vars={"rows": value})


@pytest.mark.parametrize("value", [[{}], {"a": 1}, "x", 0, False])
def test_is_empty_false_for_non_empty_values(value):
    assert not holds({"is_empty": "$rows"}, vars={"rows": value})


def test_is_not_empty():
    assert holds({"is_not_empty": "$rows"}, vars={"rows": [1]})
    assert not holds({"is_not_empty": "$rows"}, vars={"rows": []})
    assert not holds({"is_not_empty": "$rows"})


# --- membership -----------------------------------------------------------------------------------------------

def test_in_checks_membership():
    assert holds({"in": ["$status", [200, 201]]}, vars={"status": 201})
    assert not holds({"in": ["$status", [200, 201]]}, vars={"status": 500})


def test_not_in_checks_membership():
    assert holds({"not_in": ["$up_resp.status", [200]]}, vars={"up_resp": {"status": 502}})
    assert not holds({"not_in": ["$up_resp.status", [200]]}, vars={"up_resp": {"status": 200}})


def test_in_against_a_referenced_list():
    assert holds({"in": ["{tag}", "$allowed"]}, fields={"tag": "stable"}, vars={"allowed": ["stable", "beta"]})


def test_in_against_a_non_collection_is_false():
    assert not holds({"in": ["$a", 5]}, vars={"a": 5})
    assert holds({"not_in": ["$a", 5]}, vars={"a": 5})


def test_in_against_unbound_collection_is_false():
    assert not holds({"in": [1, "$nothing"]})


# --- lenient operands -----------------------------------------------------------------------------------------

def test_unbound_var_reads_as_null():
    assert holds({"is_null": "$never_bound"})
    assert holds({"equals": ["$never_bound", None]})


def test_unbound_var_path_reads_as_null():
    assert holds({"is_null": "$meta.blob_digest"}, vars={"meta": None})
    assert holds({"is_null": "$rows[3].version"}, vars={"rows": []})


def test_unfetched_upstream_status_is_not_in_ok_list():
    assert holds({"not_in": ["$up_resp.status", [200]]})


def test_unbound_field_and_principal_read_as_null():
    assert holds({"is_null": "{missing}"})
    assert holds({"is_null": "{principal.sub}"})


# --- combinators ----------------------------------------------------------------------------------------------

TRUE = {"equals": [1, 1]}
FALSE = {"equals": [1, 2]}


def test_all_requires_every_condition():
    assert holds({"all": [TRUE, TRUE, TRUE]})
    assert not holds({"all": [TRUE, FALSE, TRUE]})


def test_any_requires_one_condition():
    assert holds({"any": [FALSE, TRUE]})
    assert not holds({"any": [FALSE, FALSE]})


def test_not_negates():
    assert holds({"not": FALSE})
    assert not holds({"not": TRUE})


@pytest.mark.parametrize("first, second, expected", [
    (TRUE, TRUE, True), (TRUE, FALSE, False), (FALSE, TRUE, True), (FALSE, FALSE, True)])
def test_implies_truth_table(first, second, expected):
    assert holds({"implies": [first, second]}) is expected


def test_nested_conditions_evaluate_against_the_context():
    spec = {"all": [
        {"is_not_null": "$meta"},
        {"any": [{"equals": ["$meta.kind", "blob"]}, {"not": {"in": ["{tag}", ["latest", "stable"]]}}]},
        {"implies": [{"equals": ["$cache_hit", True]}, {"is_not_empty": "$cached"}]},
    ]}
    assert holds(spec, fields={"tag": "dev"}, vars={"meta": {"kind": "doc"}, "cache_hit": False})
    assert not holds(spec, fields={"tag": "stable"}, vars={"meta": {"kind": "doc"}, "cache_hit": False})
    assert holds(spec, fields={"tag": "stable"}, vars={"meta": {"kind": "blob"}, "cache_hit": False})
    assert not holds(spec, fields={"tag": "dev"}, vars={"meta": {"kind": "doc"}, "cache_hit": True, "cached": []})
    assert not holds(spec, fields={"tag": "dev"}, vars={"meta": None})


def test_predicate_is_compiled_once_and_reused():
    predicate = compile_condition({"is_null": "$meta"}, PLACE)
    assert predicate(Namespaces(vars={"meta": None}))
    assert not predicate(Namespaces(vars={"meta": {}}))
    assert predicate(Namespaces())


def test_references_are_collected_for_binding_analysis():
    refs = []
    compile_condition({"all": [{"is_null": "$meta.x"}, {"not": {"in": ["{tag}", "$allowed"]}}]}, PLACE, refs=refs)
    assert sorted(ref.source for ref in refs) == ["$allowed", "$meta.x", "{tag}"]


def test_extra_keywords_are_used_by_their_caller_only():
    extra = {"always": lambda arg, where: (lambda ctx: arg)}
    assert compile_condition({"not": {"always": False}}, PLACE, extra=extra)(Namespaces())
    with pytest.raises(ConditionError):
        compile_condition({"always": True}, PLACE)


# --- load-time errors -----------------------------------------------------------------------------------------

def test_unknown_keyword_names_its_place():
    error = load_error({"is_nul": "$meta"})
    assert error.place == PLACE + ".is_nul"
    assert "is_nul" in str(error)
    assert "is_null" in str(error)  # lists what was expected


def test_unknown_keyword_nested_names_its_full_place():
    error = load_error({"all": [TRUE, {"any": [FALSE, {"bogus": 1}]}]})
    assert error.place == PLACE + ".all[1].any[1].bogus"


def test_unknown_keyword_under_not_names_its_place():
    assert load_error({"not": {"truthy": "$x"}}).place == PLACE + ".not.truthy"


def test_unknown_keyword_is_never_true():
    with pytest.raises(ConditionError):
        compile_condition({"any": [TRUE, {"whatever": []}]}, PLACE)


def test_condition_with_two_keywords_is_an_error():
    assert load_error({"is_null": "$a", "is_not_null": "$b"}).place == PLACE


def test_condition_that_is_not_an_object_is_an_error():
    assert load_error(["is_null", "$a"]).place == PLACE
    assert load_error({}).place == PLACE


@pytest.mark.parametrize("operands", [["$a"], ["$a", 1, 2], "$a", None])
def test_binary_keyword_needs_exactly_two_operands(operands):
    error = load_error({"equals": operands})
    assert error.place == PLACE + ".equals"
    assert "two" in str(error)


@pytest.mark.parametrize("name", ["not_equals", "in", "not_in"])
def test_every_binary_keyword_checks_arity(name):
    assert load_error({name: ["$a"]}).place == PLACE + "." + name


@pytest.mark.parametrize("name", ["all", "any"])
def test_list_keywords_need_a_non_empty_list(name):
    assert load_error({name: []}).place == PLACE + "." + name
    assert load_error({name: TRUE}).place == PLACE + "." + name


def test_not_takes_one_condition_object():
    assert load_error({"not": [TRUE]}).place == PLACE + ".not"


@pytest.mark.parametrize("conditions", [[TRUE], [TRUE, TRUE, TRUE]])
def test_implies_needs_exactly_two_conditions(conditions):
    error = load_error({"implies": conditions})
    assert "two" in str(error)
    assert error.place == PLACE + ".implies"
