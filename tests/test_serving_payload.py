"""Request validation (no server, no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.payload import Limits, RequestError, features_for, parse_json, parse_predict_body, read_json_instances
from trainer import schema
from trainer.schema import Variant

LAB = features_for(Variant.LAB.features)
DT = features_for(Variant.DATETIME.features)
LIMITS = Limits(max_batch=5)


def body(**kw):
    return parse_predict_body(kw, LAB, LIMITS)


def test_row_and_columnar_formats_give_the_same_columns():
    rows, is_rows, _ = body(instances=[schema.TEST_INSTANCE, schema.TEST_INSTANCE])
    cols, is_rows2, _ = body(inputs={k: [v, v] for k, v in schema.TEST_INSTANCE.items()})
    assert is_rows and not is_rows2
    for name in Variant.LAB.features:
        assert rows[name].dtype == np.float32
        np.testing.assert_array_equal(rows[name], cols[name])


def test_datetime_variant_takes_the_schema_format():
    cols, _, _ = parse_predict_body({"instances": [schema.TEST_INSTANCE_DATETIME]}, DT, LIMITS)
    assert cols[schema.DATETIME][0] == schema.TEST_INSTANCE_DATETIME[schema.DATETIME]
    bad = {**schema.TEST_INSTANCE_DATETIME, schema.DATETIME: "yesterday"}
    with pytest.raises(RequestError, match=r"pickup_datetime.*not a date-time"):
        parse_predict_body({"instances": [bad]}, DT, LIMITS)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"instances": [{k: v for k, v in schema.TEST_INSTANCE.items() if k != "passengers"}]}, "missing feature passengers"),
        ({"instances": [{**schema.TEST_INSTANCE, "tip": 1}]}, "unknown feature tip"),
        ({"instances": [{**schema.TEST_INSTANCE, "passengers": "2"}]}, "passengers must be a number, got a string"),
        ({"instances": [{**schema.TEST_INSTANCE, "passengers": True}]}, "passengers must be a number, got a boolean"),
        ({"instances": [{**schema.TEST_INSTANCE, "pickuplat": None}]}, "pickuplat must be a number, got null"),
        ({"instances": [{**schema.TEST_INSTANCE, "pickuplat": [40.7]}]}, "pickuplat must be a number, got a list"),
        ({"instances": [schema.TEST_INSTANCE, {**schema.TEST_INSTANCE, "pickuplat": 0.0}]}, "instance 1: pickuplat=0.0 is outside"),
        ({"instances": [{**schema.TEST_INSTANCE, "passengers": 10**400}]}, "too large"),
        ({"instances": []}, "no instance"),
        ({"instances": [schema.TEST_INSTANCE] * 6}, "6 instances, more than the limit of 5"),
        ({"instances": {"a": 1}}, '"instances" must be a list'),
        ({"instances": [1.0]}, "instance 0 must be an object"),
        ({"inputs": {k: [v] for k, v in schema.TEST_INSTANCE.items()} | {"passengers": [1, 2]}}, "different lengths"),
        ({"inputs": {k: v for k, v in schema.TEST_INSTANCE.items()}}, "must be a list of values"),
        ({"instances": [schema.TEST_INSTANCE], "inputs": {}}, "either"),
        ({"instance": [schema.TEST_INSTANCE]}, "unknown key 'instance'"),
        ({}, 'no "instances"'),
        ({"instances": [schema.TEST_INSTANCE], "signature_name": 3}, "signature_name"),
    ],
)
def test_bad_bodies_name_the_problem(payload, message):
    with pytest.raises(RequestError, match=message) as info:
        body(**payload)
    assert info.value.status == 400


def test_nan_and_infinity_are_refused_in_json_and_in_values():
    with pytest.raises(RequestError, match="NaN"):
        parse_json(b'{"instances": [{"pickuplon": NaN}]}')
    with pytest.raises(RequestError, match="Infinity"):
        parse_json(b'{"instances": [{"pickuplon": -Infinity}]}')
    with pytest.raises(RequestError, match="NaN and infinite"):
        parse_predict_body({"inputs": {k: [v, float("inf")] for k, v in schema.TEST_INSTANCE.items()}}, LAB, LIMITS)


def test_range_check_can_be_switched_off():
    far = {**schema.TEST_INSTANCE, "pickuplat": 0.0}
    cols, _, _ = parse_predict_body({"instances": [far]}, LAB, Limits(check_ranges=False))
    assert cols["pickuplat"][0] == 0.0


def test_malformed_json_names_line_and_column():
    with pytest.raises(RequestError, match="malformed JSON at line 1 column 2"):
        parse_json(b"{x")
    with pytest.raises(RequestError, match="not UTF-8"):
        parse_json(b"\xff\xfe")


def test_json_instances_file(tmp_path):
    good = tmp_path / "test.json"
    good.write_text(json.dumps(schema.TEST_INSTANCE) + "\n\n" + json.dumps(schema.TEST_INSTANCE) + "\n")
    assert read_json_instances(str(good)) == [schema.TEST_INSTANCE, schema.TEST_INSTANCE]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(schema.TEST_INSTANCE) + "\n{oops\n")
    with pytest.raises(RequestError, match=r"bad.json:2: malformed JSON"):
        read_json_instances(str(bad))
    with pytest.raises(RequestError, match="cannot read"):
        read_json_instances(str(tmp_path / "missing.json"))


def test_signature_inputs_must_be_schema_features():
    with pytest.raises(ValueError, match=r"not a feature of trainer/schema\.py"):
        features_for(["pickuplon", "tip"])
