"""A step's output schema as Spark wants it, converted from its Arrow schema by pyspark's public API."""

from __future__ import annotations

from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from pipeline.inference.steps import Step


def spark_schema(step: Step) -> StructType:
    return from_arrow_schema(step.schema)
