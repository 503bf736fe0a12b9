"""What differs between Spark variants, behind one small interface.

A UDF style is `apply(frame, step, ledger, options, profile=None) -> DataFrame`: it runs one
`pipeline.inference.steps.Step` over `frame`'s `step.inputs` columns with its own Spark mechanism, reports each
task through the ledger, and returns a DataFrame of `step.schema`. A topology (`variants.topology`) cuts the
work into steps, stages and jobs. Preprocessing and model code are shared by all of them.
"""

from __future__ import annotations

from typing import Protocol

from pyspark.resource import ResourceProfile
from pyspark.sql import DataFrame

from pipeline.config.schema import UdfConfig, UdfStyle
from pipeline.inference.steps import Step
from pipeline.spark.ledger import TaskLedger
from variants import (
    arrow_udf,
    iterator_pandas_udf,
    map_in_arrow,
    map_in_pandas,
    predict_batch_udf,
    rdd_map_partitions,
    scalar_pandas_udf,
)


class Style(Protocol):
    def __call__(
        self,
        frame: DataFrame,
        step: Step,
        ledger: TaskLedger,
        options: UdfConfig,
        profile: ResourceProfile | None = None,
    ) -> DataFrame: ...


UDF_STYLES: dict[UdfStyle, Style] = {
    UdfStyle.scalar_pandas_udf: scalar_pandas_udf.apply,
    UdfStyle.iterator_pandas_udf: iterator_pandas_udf.apply,
    UdfStyle.map_in_pandas: map_in_pandas.apply,
    UdfStyle.map_in_arrow: map_in_arrow.apply,
    UdfStyle.rdd_map_partitions: rdd_map_partitions.apply,
    UdfStyle.predict_batch_udf: predict_batch_udf.apply,
    UdfStyle.arrow_udf: arrow_udf.apply,
}
