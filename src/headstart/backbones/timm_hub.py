"""`timm:NAME`: any timm architecture with timm's own pretrained loading (needs the hub unless --weights)."""
from __future__ import annotations

import timm

from headstart.backbones.registry import SOURCES
from headstart.backbones.timm_backbone import TimmBackbone
from headstart.backbones.weights import file_digest, load_body_weights, read_state_dict
from headstart.errors import UserError


@SOURCES.register("timm")
def create_timm_backbone(arch: str, weights: str | None = None) -> TimmBackbone:
    if not timm.is_model(arch.split(".")[0]):
        near = timm.list_models(f"*{arch.split('.')[0]}*")[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise UserError(f"timm has no model {arch!r}{hint}")
    if weights:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        load_body_weights(model, read_state_dict(weights), source=weights)
        return TimmBackbone(f"timm:{arch}", arch, model, weights_id=file_digest(weights))
    try:
        model = timm.create_model(arch, pretrained=True, num_classes=0)
    except Exception as err:  # noqa: BLE001 - hub/network failures come in many types
        from headstart.backbones.registry import BACKBONES

        raise UserError(
            f"could not download pretrained weights for timm model {arch!r} ({type(err).__name__}: offline?); "
            f"use a bundled backbone ({', '.join(BACKBONES.names())}) or pass --weights FILE (.safetensors or .pth)"
        ) from None
    tag = model.pretrained_cfg.get("tag") or "default"
    return TimmBackbone(f"timm:{arch}", arch, model, weights_id=f"timm-{tag}")


create_timm_backbone.modality = "image"
