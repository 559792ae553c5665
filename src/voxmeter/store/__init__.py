"""The results store: SQLite storage (`db`), aggregation over repeats (`aggregate`) and
export (`export`). Every name is importable from `voxmeter.store` itself."""

from voxmeter.store.aggregate import (
    AggRow,
    MetricAgg,
    aggregate_results,
    distinguish,
    pooled_percentiles,
    spec_label,
    stage_keys_of,
)
from voxmeter.store.db import (
    APPLICATION_ID,
    DEFAULT_STORE_PATH,
    SCHEMA_VERSION,
    UNKNOWN,
    ResultStore,
    failed_result,
    open_existing,
)
from voxmeter.store.export import EXPORT_FORMATS, flat_rows, write_flat

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_STORE_PATH",
    "EXPORT_FORMATS",
    "SCHEMA_VERSION",
    "UNKNOWN",
    "AggRow",
    "MetricAgg",
    "ResultStore",
    "aggregate_results",
    "distinguish",
    "failed_result",
    "flat_rows",
    "open_existing",
    "pooled_percentiles",
    "spec_label",
    "stage_keys_of",
    "write_flat",
]
