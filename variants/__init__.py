"""What differs between Spark variants, behind one interface: `predictions(images, inference, ledger)`.

`images` has columns (id, label, image); the function returns a DataFrame of predictions with
`pipeline.inference.PREDICTION_DDL` and reports each task through the ledger.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame

from pipeline.inference import Inference
from pipeline.schema import UdfStyle
from variants import map_in_pandas
from variants.tasks import TaskLedger

Variant = Callable[[DataFrame, Inference, TaskLedger], DataFrame]

UDF_STYLES: dict[UdfStyle, Variant] = {
    UdfStyle.map_in_pandas: map_in_pandas.predictions,
}
