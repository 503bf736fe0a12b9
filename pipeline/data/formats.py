"""What an image column's bytes are in `dataset.format=raw`: the generators write them (`pipeline.data.parts`),
preprocessing reads them and the bottleneck model counts them. Nothing here imports torch or pyarrow, so a
data-generating worker and the GPU check can both have it."""

RAW_SIDE = 256  # the original study's decoded arrays: 256x256x3 uint8, HWC
RAW_BYTES = RAW_SIDE * RAW_SIDE * 3
