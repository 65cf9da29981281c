from trainer import features, schema
from trainer.schema import Variant


def test_variants_and_columns():
    assert Variant.LAB.columns == ("fare_amount", "pickuplon", "pickuplat", "dropofflon", "dropofflat", "passengers", "key")
    assert Variant.DATETIME.columns[1] == "pickup_datetime"
    assert Variant.from_column_count(7) is Variant.LAB
    assert Variant.from_column_count(8) is Variant.DATETIME


def test_unknown_column_count_names_both_layouts():
    import pytest

    with pytest.raises(ValueError, match=r"7 columns .* or 8"):
        Variant.from_column_count(5)


def test_every_column_has_a_default_and_every_number_a_range():
    for variant in Variant:
        for name in variant.columns:
            assert name in schema.DEFAULTS
    for name in (schema.LABEL, *schema.NUMERIC_FEATURES):
        assert name in schema.RANGES


def test_test_instance_has_exactly_the_lab_features():
    assert set(schema.TEST_INSTANCE) == set(Variant.LAB.features)
    assert set(schema.TEST_INSTANCE_DATETIME) == set(Variant.DATETIME.features)


def test_grid_is_sorted_and_covers_the_city():
    assert list(schema.GRID_LON) == sorted(schema.GRID_LON)
    assert schema.GRID_LON[0] < -74.0 < schema.GRID_LON[-1]
    assert schema.GRID_LAT[0] < 40.7 < schema.GRID_LAT[-1]
    assert (len(schema.GRID_LON) + 1) * (len(schema.GRID_LAT) + 1) == features.N_CELLS
