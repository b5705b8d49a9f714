"""What inference needs of a model: :class:`ReferringModel`.

:class:`rrsis_geo.model.fianet.FIANet` is one; the stand-ins of ``tests/standin.py`` are others
(they paint by colour so that the pipeline can be tested without trained weights). The inference
(``rrsis_geo.inference``) encodes each sentence once, then segments batches of tiles with the
encoded text, and reads the model card ``meta`` for the input size, ground resolution and
normalisation.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class ReferringModel(Protocol):
    """A referring-segmentation model as the inference uses it (a ``torch.nn.Module``).

    ``meta`` is the model card: ``input_size`` (pixels), ``gsd`` (metres per pixel or None),
    ``mean`` / ``std`` (three numbers each), ``classes``, ``max_tokens``, ... (see
    docs/fianet.md). ``encode_text`` takes WordPiece ids and the 0/1 attention, object-word
    and position-word masks ``[B, L]`` and returns text features (a
    :class:`rrsis_geo.model.fiam.TextFeatures` for FIANet) that ``segment_image`` takes with
    normalised images ``[B, 3, H, W]``, returning logits ``[B, 2, H, W]`` (background,
    referent). The module methods the inference also calls (``eval``, ``to``, ``parameters``)
    come with ``torch.nn.Module``.
    """

    @property
    def meta(self) -> dict[str, Any]: ...

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, object_mask: Tensor,
                    position_mask: Tensor) -> Any: ...

    def segment_image(self, image: Tensor, text_features: Any) -> Tensor: ...
