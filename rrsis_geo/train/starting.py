"""Starting points of a training run: a new model, a whole model (``--weights``), or pretrained
parts for a new model (``--backbone-weights``: an ImageNet Swin state dict or ``timm:NAME``;
``--text-weights``: a local BERT folder), read and checked before anything is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rrsis_geo.errors import WeightsError

if TYPE_CHECKING:
    from rrsis_geo.train.config import TrainSettings


def new_config(s: TrainSettings):
    from rrsis_geo.model import FIANetConfig

    if s.config_name == "official":
        config = FIANetConfig.official(num_tmem=1 if s.format == "refsegrs" else 3)
    else:
        config = FIANetConfig.tiny()
    if s.coord_channels is not None:
        config = replace(config, coord_channels=s.coord_channels)
    return config


def build_model(s: TrainSettings) -> nn.Module:
    from rrsis_geo.model import FIANet, load_fianet

    if s.init_weights:
        if not Path(s.init_weights).exists():
            raise WeightsError(f"--weights file not found: {s.init_weights}")
        model = load_fianet(s.init_weights)
        # a fresh run: the init model's training history does not describe this run
        model.meta.pop("training", None)
        return model
    return FIANet(new_config(s))


TIMM_PREFIX = "timm:"


def _fetch_timm_state(name: str) -> dict[str, torch.Tensor]:
    """Pretrained weights of a timm model by name (timm downloads them; needs a connection
    unless they are in the Hugging Face cache)."""
    try:
        import timm
    except ImportError:
        raise WeightsError(f"--backbone-weights {TIMM_PREFIX}{name} needs the timm package "
                           "(pip install timm), or pass a weights file") from None
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import logging as hub_logging

    verbosity, offline = hub_logging.get_verbosity(), hub_constants.HF_HUB_OFFLINE
    hub_logging.set_verbosity_error()  # offline, the hub logs a line per retry
    if not _hub_resolves(hub_constants.ENDPOINT):
        hub_constants.HF_HUB_OFFLINE = True  # the local cache only, instead of a minute of retries
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:  # noqa: BLE001 - unknown name, offline hub, bad download
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"cannot fetch {TIMM_PREFIX}{name} with timm ({text[:200]}); offline? "
                           "download the weights and pass the file") from None
    finally:
        hub_logging.set_verbosity(verbosity)
        hub_constants.HF_HUB_OFFLINE = offline
    return model.state_dict()


def _hub_resolves(endpoint: str) -> bool:
    """Whether the model hub's host name resolves (False on a machine without a network)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(endpoint).hostname
    if not host:
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def prepare_starting_points(s: TrainSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """Read and check --backbone-weights / --text-weights before anything is built or written.

    The target shapes come from the model built on the ``meta`` device (no memory, no init).
    """
    if not (s.backbone_weights or s.text_weights):
        return {}
    from rrsis_geo.model import FIANet
    from rrsis_geo.model.pretrained import (check_bert_folder, map_swin_state_dict,
                                            read_state_dict, swin_target_shapes)

    with torch.device("meta"):
        skeleton = FIANet(new_config(s), load_text_weights=False)
    prepared: dict[str, Any] = {}
    if s.text_weights:
        c = skeleton.text_encoder.config
        check_bert_folder(s.text_weights, {
            "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size, "vocab_size": c.vocab_size})
    if s.backbone_weights:
        spec = s.backbone_weights
        if spec.startswith(TIMM_PREFIX):
            say(f"fetching {spec} with timm (a download the first time; set HF_HUB_OFFLINE=1 "
                "to use only the local cache)")
            state = _fetch_timm_state(spec[len(TIMM_PREFIX):])
        else:
            state = read_state_dict(spec)
        prepared["backbone"] = map_swin_state_dict(state, swin_target_shapes(skeleton),
                                                   source=f"--backbone-weights {spec}")
    return prepared


def load_starting_points(model: nn.Module, s: TrainSettings, prepared: dict[str, Any],
                          say: Callable[[str], None]) -> None:
    from rrsis_geo.model.pretrained import load_bert_folder, load_swin_weights

    if "backbone" in prepared:
        load_swin_weights(model, prepared["backbone"])
        say(f"backbone weights {s.backbone_weights}: {prepared['backbone'].summary()}")
    if s.text_weights:
        n = load_bert_folder(model, s.text_weights)
        say(f"text weights {s.text_weights}: {n} tensors loaded into the BERT text encoder")
