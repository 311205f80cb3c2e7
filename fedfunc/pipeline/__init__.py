"""The silo-side update pipeline: what happens to a silo's trained model before it leaves the silo.

An ordered chain of transforms (``delta``, ``clip``; later ``dp_noise``, ``quantize``, ``secagg_mask``)
runs between training and packaging, configured by the signed bundle (``SiloSide``) after the silo's
own required transforms (its policy's ``update_transforms``). Each records itself in the update's
history (``history.to_metadata``), which the orchestrator checks against the run's signed bundle
before it aggregates (``history.check_history``). FedProx's proximal term is the training hook of the
same silo side (``proximal``). Domain code: numpy (and torch for the hook), no I/O.
"""
from fedfunc.pipeline.base import PAYLOADS, Payload, Step, Transform, TransformError, Update
from fedfunc.pipeline.config import SiloSide, TransformSpec, chain, default_clip_norm, silo_side
from fedfunc.pipeline.history import check_history, clipped, from_metadata, required_steps, to_metadata
from fedfunc.pipeline.registry import TRANSFORMS

__all__ = ["PAYLOADS", "Payload", "SiloSide", "Step", "TRANSFORMS", "Transform", "TransformError", "TransformSpec",
           "Update", "chain", "check_history", "clipped", "default_clip_norm", "from_metadata", "required_steps",
           "silo_side", "to_metadata"]
