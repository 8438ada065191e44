"""The helpers shared by the ``cnnkit`` subcommands, by their old names (kept for imports elsewhere).

Each lives in a small module of its own: argument types in ``_args``, files in ``_files``, tables in
``_table``, the zoo and model files in ``_models``, ``--data`` in ``_data``, ``--threads`` in
``_threads``; the saved preprocessing in :mod:`cnnkit.data.preprocess` and image-file inference in
:mod:`cnnkit.inference`. New code imports from those modules.
"""

from __future__ import annotations

from ._args import (
    AUGMENT_DEFAULTS,
    AUGMENT_PRESETS,
    DATASET_NAMES,
    add_threads_argument,
    arg_type,
    fraction,
    parse_augment,
    parse_image_size,
    parse_shape,
    parse_threads,
    positive_float,
    positive_int,
)
from ._data import (
    NORMALIZE_SAMPLE,
    SHAPES_SAMPLES,
    LoadedData,
    Subset,
    build_for_data,
    convert_images,
    data_label,
    fit_normalize,
    load_data,
)
from ._files import (
    IMAGE_SUFFIXES,
    check_output_dir,
    check_output_file,
    collect_image_files,
    guard_outputs,
    require_path,
    write_json,
)
from ._models import get_zoo_model, load_model_file, make_optimizer, require_model_name, save_curves
from ._table import format_table, warn
from ._threads import auto_threads, blas_threads, busy_cores

__all__ = [
    "AUGMENT_DEFAULTS",
    "AUGMENT_PRESETS",
    "DATASET_NAMES",
    "IMAGE_SUFFIXES",
    "NORMALIZE_SAMPLE",
    "SHAPES_SAMPLES",
    "LoadedData",
    "Subset",
    "add_threads_argument",
    "arg_type",
    "auto_threads",
    "blas_threads",
    "build_for_data",
    "busy_cores",
    "check_output_dir",
    "check_output_file",
    "collect_image_files",
    "convert_images",
    "data_label",
    "fit_normalize",
    "format_table",
    "fraction",
    "get_zoo_model",
    "guard_outputs",
    "load_data",
    "load_model_file",
    "make_optimizer",
    "parse_augment",
    "parse_image_size",
    "parse_shape",
    "parse_threads",
    "positive_float",
    "positive_int",
    "require_model_name",
    "require_path",
    "save_curves",
    "warn",
    "write_json",
]
