"""Label discovery: which labels serve as classes when none is named, and the errors."""

from __future__ import annotations

import pytest

from monoscope._util import MonoscopeError
from monoscope.labels import class_label_keys, key_with_values, one_class_label_key


def pairs(*labels: dict) -> list[dict]:
    return [{"caption": "c", "labels": lab} for lab in labels]


def test_class_label_keys_skip_ids_bookkeeping_and_constants():
    ps = pairs(
        *(
            {"kind": k, "split": s, "uid": str(i), "const": "x"}
            for i, (k, s) in enumerate([("a", "train"), ("a", "val"), ("b", "train"), ("b", "val")])
        )
    )
    # uid: unique per pair (an id); const: one value; split: bookkeeping
    assert class_label_keys(ps) == ["kind"]
    assert one_class_label_key(ps) == "kind"


def test_class_label_keys_need_two_pairs_per_value_on_average():
    assert class_label_keys(pairs({"k": "a"}, {"k": "b"}, {"k": "a"})) == []  # 2 values, 3 pairs
    assert class_label_keys(pairs({"k": "a"}, {"k": "b"}, {"k": "a"}, {"k": "b"})) == ["k"]
    # missing and empty values are not values
    assert class_label_keys(pairs({"k": "a"}, {"k": ""}, {"k": None}, {"k": "a"})) == []


def test_one_class_label_key_errors_name_the_labels():
    with pytest.raises(MonoscopeError, match=r"labels present: \['split'\]; .* --label-key"):
        one_class_label_key(pairs({"split": "a"}, {"split": "b"}, {"split": "a"}, {}))
    with pytest.raises(MonoscopeError, match=r"labels present: none"):
        one_class_label_key(pairs({}, {}))
    two = pairs(*({"x": v, "y": v} for v in "aabb"))
    with pytest.raises(MonoscopeError, match=r"several labels .*\(x, y\): pass --label-key"):
        one_class_label_key(two)


def test_key_with_values():
    ps = pairs({"g": "woman"}, {"g": "man"}, {"h": "woman"}, {"h": "cat"})
    assert key_with_values(ps, ["woman", "man"]) == "g"
    with pytest.raises(MonoscopeError, match="no label takes the values 'woman' and 'dog'"):
        key_with_values(ps, ["woman", "dog"])
    with pytest.raises(MonoscopeError, match=r"several labels .*\(g, h\)"):
        key_with_values(pairs({"g": "woman"}, {"h": "woman"}), ["woman"])
