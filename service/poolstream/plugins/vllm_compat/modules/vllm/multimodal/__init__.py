"""``vllm.multimodal``: the types plugins annotate multimodal prompts with.

poolstream's engine takes ``multi_modal_data`` as named tensors, flat
(``{"pixel_values": t}``) or nested under a modality (``{"image": {"pixel_values": t}}``).
"""

from collections.abc import Mapping
from typing import Any

MultiModalDataDict = Mapping[str, Any]
ModalityData = Any

__all__ = ["ModalityData", "MultiModalDataDict"]
