"""FIANet model: configuration, network, text features, checkpoint I/O.

Public API::

    FIANetConfig.official(num_tmem=3) / FIANetConfig.tiny()
    FIANet(config)(image, input_ids, attention_mask, object_mask, position_mask) -> [B, 2, H, W]
    FIANet.encode_text(...) -> TextFeatures;  FIANet.segment_image(image, text) -> logits
    load_fianet(path, map_location="cpu") -> FIANet (eval);  save_fianet(model, path, meta)
    ReferringModel: the Protocol inference needs (meta, encode_text, segment_image)

Pretrained parts for training (:mod:`rrsis_geo.model.pretrained`): ImageNet Swin state dicts in
the Microsoft or timm layout mapped onto the backbone, local BERT folders into the text encoder.
"""

from rrsis_geo.model.checkpoint import load_fianet, save_fianet
from rrsis_geo.model.fiam import TextFeatures
from rrsis_geo.model.fianet import FIANet, FIANetConfig
from rrsis_geo.model.protocol import ReferringModel

__all__ = ["FIANet", "FIANetConfig", "ReferringModel", "TextFeatures", "load_fianet",
           "save_fianet"]
