"""Text side of FIANet: offline WordPiece tokenisation and object / spatial-phrase masks."""

from rrsis_geo.text.classes import (
    CLASS_LISTS,
    DATASET_MAX_TOKENS,
    REFSEGRS_CLASSES,
    RRSISD_CLASSES,
    resolve_classes,
)
from rrsis_geo.text.decouple import Analysis, Decoupled, analyse, decouple, decouple_batch
from rrsis_geo.text.tokenizer import get_tokenizer

__all__ = [
    "CLASS_LISTS",
    "DATASET_MAX_TOKENS",
    "REFSEGRS_CLASSES",
    "RRSISD_CLASSES",
    "Analysis",
    "Decoupled",
    "analyse",
    "decouple",
    "decouple_batch",
    "get_tokenizer",
    "resolve_classes",
]
