"""Order-preserving key encodings (app/stores/sortkeys.py): semver precedence, descending, prefix-freeness."""
import itertools
import random


from app.stores.sortkeys import (descending, encode_int, encode_str, encode_uint, encode_value, encode_version,
                                 parse_semver)

SEED = 20240611

# semver.org, section 11, example 4 (each strictly greater than the one before)
SEMVER_ORG_ORDER = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
                    "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]


def by_encoding(values, encode=encode_version):
    return sorted(values, key=encode)


def shuffled(values, seed=SEED):
    out = list(values)
    random.Random(seed).shuffle(out)
    return out


def assert_strictly_increasing(values, encode=encode_version):
    keys = [encode(v) for v in values]
    for (a, ka), (b, kb) in zip(zip(values, keys), zip(values[1:], keys[1:])):
        assert ka < kb, "%r should sort before %r" % (a, b)


def precedence(text):
    """An independent oracle for semver.org precedence: a tuple that Python compares the same way."""
    core, _, rest = text.partition("-")
    rest = rest.split("+", 1)[0]
    core = core.split("+", 1)[0]
    numbers = tuple(int(p) for p in core.split("."))
    if not rest:
        return numbers + (1, ())
    idents = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in rest.split("."))
    return numbers + (0, idents)


# --- semver precedence ----------------------------------------------------------------------------------------

def test_semver_org_precedence_example():
    assert_strictly_increasing(SEMVER_ORG_ORDER)


def test_semver_org_example_sorts_from_shuffled():
    assert by_encoding(shuffled(SEMVER_ORG_ORDER)) == SEMVER_ORG_ORDER


def test_numeric_components_compare_as_numbers():
    assert_strictly_increasing(["1.9.0", "1.10.0", "1.11.0", "2.0.0", "10.0.0"])
    assert_strictly_increasing(["0.0.9", "0.0.10", "0.9.99", "0.10.0"])


def test_numeric_prerelease_identifiers_compare_as_numbers():
    assert_strictly_increasing(["1.0.0-rc.1", "1.0.0-rc.2", "1.0.0-rc.9", "1.0.0-rc.10", "1.0.0-rc.100"])


def test_numeric_identifier_sorts_before_alphanumeric():
    assert_strictly_increasing(["1.0.0-1", "1.0.0-99", "1.0.0-a", "1.0.0-alpha"])
    assert_strictly_increasing(["1.0.0-alpha.999", "1.0.0-alpha.a"])


def test_alphanumeric_identifiers_compare_in_ascii_order():
    assert_strictly_increasing(["1.0.0-Beta", "1.0.0-alpha", "1.0.0-alpha-1", "1.0.0-alpha0", "1.0.0-alphaa",
                                "1.0.0-b"])


def test_shorter_identifier_list_sorts_first():
    assert_strictly_increasing(["1.0.0-alpha", "1.0.0-alpha.0", "1.0.0-alpha.0.0", "1.0.0-alpha.1"])


def test_prerelease_sorts_before_its_release_but_after_previous_release():
    assert_strictly_increasing(["0.9.9", "1.0.0-0", "1.0.0-rc.99", "1.0.0", "1.0.1-alpha", "1.0.1"])


def test_build_metadata_is_ignored():
    assert encode_version("1.0.0+build.1") == encode_version("1.0.0+build.2") == encode_version("1.0.0")
    assert encode_version("1.0.0-rc.1+sha.abc") == encode_version("1.0.0-rc.1")
    assert encode_version("1.0.0+zzz") < encode_version("1.0.1+aaa")


def test_large_numeric_components():
    big = 2 ** 64
    assert_strictly_increasing(["1.0.0", "%d.0.0" % (big - 1), "%d.0.0" % big, "99999999999999999999999.0.0"])
    assert_strictly_increasing(["1.%d.0" % (big - 1), "1.%d.0" % big, "1.%d.1" % big, "2.0.0"])
    assert_strictly_increasing(["1.0.0-rc.99", "1.0.0-rc.%d" % big, "1.0.0-rc.%d" % (big * 256), "1.0.0-rc.a"])


def test_non_semver_versions_sort_before_semver_lexically():
    assert_strictly_increasing(["1.0", "latest", "v2", "0.0.0-0", "0.0.0"])
    assert parse_semver("1.0") is None and parse_semver("1.0.0-rc.01") is None


def test_lexical_ordering_ignores_semver():
    lexical = lambda v: encode_version(v, ordering="lexical")  # noqa: E731
    assert_strictly_increasing(["1.10.0", "1.9.0"], lexical)


def test_random_versions_sort_like_the_precedence_oracle():
    rng = random.Random(SEED)
    idents = ["0", "1", "2", "10", "11", "alpha", "beta", "rc", "a1", "A", "x-y"]
    versions = set()
    while len(versions) < 400:
        core = ".".join(str(rng.choice([0, 1, 2, 9, 10, 11, 100])) for _ in range(3))
        n = rng.choice([0, 0, 1, 2, 3])
        versions.add(core + ("-" + ".".join(rng.choice(idents) for _ in range(n)) if n else ""))
    versions = shuffled(sorted(versions))
    assert by_encoding(versions) == sorted(versions, key=precedence)


# --- descending -----------------------------------------------------------------------------------------------

def test_descending_exactly_reverses_semver_order():
    values = shuffled(SEMVER_ORG_ORDER + ["1.9.0", "1.10.0", "0.1.0", "1.0.0-rc.10", "not-semver"])
    ascending = by_encoding(values)
    assert sorted(values, key=lambda v: descending(encode_version(v))) == ascending[::-1]


def test_descending_reverses_prefix_related_strings():
    values = ["", "a", "a\x00", "a\x00b", "ab", "abc", "b"]
    assert sorted(values, key=lambda v: descending(encode_str(v))) == sorted(values)[::-1]


def test_descending_is_an_involution():
    for value in (b"", b"\x00\xff", encode_version("1.2.3-rc.1")):
        assert descending(descending(value)) == value


def test_descending_keeps_equal_keys_equal():
    assert descending(encode_version("1.0.0+a")) == descending(encode_version("1.0.0+b"))


# --- integers and strings -------------------------------------------------------------------------------------

def test_uint_order_across_byte_lengths():
    values = [0, 1, 127, 255, 256, 65535, 65536, 2 ** 64 - 1, 2 ** 64, 2 ** 200]
    assert_strictly_increasing(values, encode_uint)


def test_int_order_across_signs():
    values = [-(2 ** 70), -65536, -256, -255, -1, 0, 1, 255, 256, 2 ** 70]
    assert_strictly_increasing(values, encode_int)
    assert by_encoding(shuffled(values), encode_int) == values


def test_strings_with_nul_bytes_order_correctly():
    values = ["", "\x00", "\x00\x00", "\x01", "a", "a\x00", "a\x00\x00", "a\x00\x01", "a\x00b", "a\x01", "ab",
              "b", "\u00e9", "\xff", "\U0001f600"]
    assert_strictly_increasing(values, encode_str)
    assert by_encoding(shuffled(values), encode_str) == sorted(values)


def test_value_encoding_orders_null_bool_int():
    assert_strictly_increasing([None, False, True], encode_value)
    assert_strictly_increasing([-5, 0, 7], encode_value)


# --- prefix-freeness: concatenated tuples sort like tuples ----------------------------------------------------

def test_no_encoding_is_a_prefix_of_another():
    strings = ["", "a", "a\x00", "a\x00b", "ab", "b\x00\x01"]
    versions = SEMVER_ORG_ORDER + ["1.0.0-alpha.0", "1.0.0-alpha.1.0", "1", "1.0"]
    for encode, values in ((encode_str, strings), (encode_version, versions),
                           (encode_uint, [0, 1, 255, 256, 2 ** 64])):
        keys = [encode(v) for v in values]
        for a, b in itertools.permutations(keys, 2):
            assert not b.startswith(a), (a, b)


def test_concatenated_string_tuples_sort_like_tuples():
    parts = ["", "a", "a\x00", "a\x00b", "ab", "b", "\x00"]
    tuples = list(itertools.product(parts, repeat=2))
    encoded = sorted(shuffled(tuples), key=lambda t: encode_str(t[0]) + encode_str(t[1]))
    assert encoded == sorted(tuples)


def test_concatenated_name_version_keys_sort_like_tuples():
    names = ["acme", "acme\x00x", "acme-x", "b"]
    versions = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0", "1.9.0", "1.10.0", "10.0.0"]
    rows = shuffled(list(itertools.product(names, versions)))
    by_key = sorted(rows, key=lambda r: encode_str(r[0]) + encode_version(r[1]))
    assert by_key == sorted(rows, key=lambda r: (r[0], precedence(r[1])))


def test_concatenated_keys_with_descending_version_sort_newest_first():
    names = ["a", "a\x00", "ab"]
    versions = ["1.0.0-rc.9", "1.0.0-rc.10", "1.0.0", "1.9.0", "1.10.0"]
    rows = shuffled(list(itertools.product(names, versions)))
    by_key = sorted(rows, key=lambda r: encode_str(r[0]) + descending(encode_version(r[1])))
    expected = [(n, v) for n in sorted(names) for v in reversed(versions)]
    assert by_key == expected

