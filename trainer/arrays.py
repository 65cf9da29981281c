"""A CSV set read whole into numpy arrays, without TensorFlow (verify_export, ``taxifare versions --score``)."""

from __future__ import annotations

from typing import Any


def read_arrays(files: list[str]) -> tuple[Any, dict[str, Any], Any]:
    """Read CSV files of one lab layout whole: ``(variant, features by name, labels)`` as numpy arrays.

    Features are float32 (``pickup_datetime`` an object array of strings), labels float64: what
    a signature takes and what errors are computed on. For files already checked (a staged split,
    or a file to score versions on): rows are not validated here.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from trainer import schema, validation

    variant = validation.detect_layout(files, what="the data")
    types = {name: pa.string() if name in (schema.DATETIME, schema.KEY) else pa.float64() for name in variant.columns}
    options = pacsv.ReadOptions(column_names=list(variant.columns))
    table = pa.concat_tables(
        [pacsv.read_csv(f, read_options=options, convert_options=pacsv.ConvertOptions(column_types=types)) for f in files]
    )
    feats: dict[str, Any] = {}
    for name in variant.features:
        col = table.column(name)
        feats[name] = np.array(col.to_pylist(), dtype=object) if name == schema.DATETIME else col.to_numpy().astype(np.float32)
    return variant, feats, table.column(schema.LABEL).to_numpy().astype(np.float64)
