"""The Spark engine: streamagg's own reader on the executors, de-duplication and counts in Spark.

``driver`` runs the day (one task per input, the notes in file order, the SQL), ``executor`` is
what the tasks run, ``session`` finds pyspark and Java and starts a quiet JVM.
"""

from __future__ import annotations

from .driver import count_day, floor_div, fold_first_occurrences, read_inputs, take_notes
from .executor import (
    ARROW_BATCH_ROWS,
    NOTE,
    READ_SCHEMA,
    ROW_INDEX,
    FileReader,
    decode_error,
    encode_error,
)
from .session import (
    INSTALL_HINT,
    JVM_ERRORS,
    default_driver_memory,
    driver_memory_set,
    failure_summary,
    java_found,
    quiet_pyspark_warnings,
    require_spark,
    spark_defaults,
    spark_errors,
    spark_session,
)

__all__ = [
    "ARROW_BATCH_ROWS", "INSTALL_HINT", "JVM_ERRORS", "NOTE", "READ_SCHEMA", "ROW_INDEX",
    "FileReader", "count_day", "decode_error", "default_driver_memory", "driver_memory_set",
    "encode_error", "failure_summary", "floor_div", "fold_first_occurrences", "java_found",
    "quiet_pyspark_warnings", "read_inputs", "require_spark", "spark_defaults", "spark_errors",
    "spark_session", "take_notes",
]
