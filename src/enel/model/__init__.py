"""The ENEL model: configuration, the LMM, the point token embedding, stage-1 objectives, stage-2 aggregation.

Importing this package registers ``EnelConfig`` / ``EnelForCausalLM`` with ``AutoConfig`` and
``AutoModelForCausalLM``, so a saved folder loads with the Auto classes after ``import enel.model``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_enel import EnelConfig
from .modeling_enel import EnelCausalLMOutput, EnelForCausalLM, EnelModel

AutoConfig.register("enel", EnelConfig, exist_ok=True)
AutoModel.register(EnelConfig, EnelModel, exist_ok=True)
AutoModelForCausalLM.register(EnelConfig, EnelForCausalLM, exist_ok=True)

__all__ = ["EnelConfig", "EnelForCausalLM", "EnelModel", "EnelCausalLMOutput"]
