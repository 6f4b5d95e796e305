"""The input pipeline: image sources, augmentation, online masks, deterministic sharded batches.

* ``photos``: image decoding (any mode and bit depth, EXIF orientation) and the real photos shipped inside
  installed wheels (the built-in, offline dataset);
* ``pipeline``: sources (LaMa-layout folders, TFDS through ``tfds.data_source``, the built-in photos),
  LaMa's augmentations, and the batching that makes every batch a pure function of (seed, step, process).

The public names are re-exported here: ``from jaxinpaint import data; data.InputPipeline(...)``.
"""

from jaxinpaint.data.pipeline import (AUGMENTS, IMAGE_EXTENSIONS, SOURCES, EmptyDatasetError, InputPipeline,
                                      default_input_config, eval_batches, make_global_batch)

__all__ = ["AUGMENTS", "IMAGE_EXTENSIONS", "SOURCES", "EmptyDatasetError", "InputPipeline", "default_input_config",
           "eval_batches", "make_global_batch"]
