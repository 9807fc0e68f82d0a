"""Registration of ast_hf with transformers' Auto classes.

transformers looks config classes up by class *name* in several places, and its own AST classes are also called
`ASTConfig` / `ASTFeatureExtractor`. What keeps the two apart:

- AutoConfig maps the model_type "ast_hf" (not a name) to our config.
- The model mappings are registered with `exist_ok=True`; they key on the config *class object*, so transformers'
  own ASTConfig (model_type "audio-spectrogram-transformer") still maps to transformers' own models.
- Our feature extractor does not write `feature_extractor_type` (that name would resolve to transformers'
  extractor); AutoFeatureExtractor then finds it through the model config's type.

Remote code (checkpoints that load with trust_remote_code=True where ast_hf is not installed) is a separate
mechanism: ASTConfig, ASTModel and ASTForAudioClassification are registered with `register_for_auto_class` at the
end of their modules, so that transformers copies their code on save_pretrained; see
`ASTPreTrainedModel.save_pretrained` for the auto_map entries it adds and why the extractor is not registered.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForPreTraining,
)

from .configuration_ast import ASTConfig
from .feature_extraction_ast import ASTFeatureExtractor
from .modeling_ast import ASTForAudioClassification, ASTForPreTraining, ASTModel


def register_auto_classes() -> None:
    """Register ast_hf with transformers' Auto classes.

    Maps the model_type "ast_hf" to `ASTConfig` in AutoConfig, and `ASTConfig` to `ASTModel` (AutoModel),
    `ASTForAudioClassification` (AutoModelForAudioClassification), `ASTForPreTraining` (AutoModelForPreTraining)
    and `ASTFeatureExtractor` (AutoFeatureExtractor).
    The model mappings key on the config class object, so transformers' own AST (model_type
    "audio-spectrogram-transformer") still maps to transformers' own classes.

    Importing `ast_hf` calls it; calling it again is harmless (every registration uses `exist_ok=True`).

    Example:
        ```python
        from transformers import AutoModelForAudioClassification

        import ast_hf  # registers on import

        model = AutoModelForAudioClassification.from_pretrained("path/or/hub-id")  # an ast_hf checkpoint
        ```
    """
    AutoConfig.register(ASTConfig.model_type, ASTConfig, exist_ok=True)
    AutoModel.register(ASTConfig, ASTModel, exist_ok=True)
    AutoModelForAudioClassification.register(ASTConfig, ASTForAudioClassification, exist_ok=True)
    AutoModelForPreTraining.register(ASTConfig, ASTForPreTraining, exist_ok=True)
    AutoFeatureExtractor.register(ASTConfig, ASTFeatureExtractor, exist_ok=True)
