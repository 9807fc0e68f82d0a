"""ast_hf: the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021) as a Hugging Face model.

Importing the package registers it with transformers' Auto classes under model_type "ast_hf", and the
"audio-tagging" pipeline (`ast_hf.tagging`) with transformers' pipeline registry; "audio-classification" then
decodes files for AST models as every other ast_hf entry point does (`ast_hf.classification_pipeline`).
"""

from .classification_pipeline import register_classification_pipeline
from .configuration_ast import ASTConfig
from .fast_inference import optimize_for_inference
from .feature_extraction_ast import ASTFeatureExtractor
from .modeling_ast import ASTForAudioClassification, ASTModel, ASTPreTrainedModel
from .registration import register_auto_classes
from .stats import compute_normalization_stats
from .tagging import AudioTaggingPipeline, register_pipeline

__version__ = "0.3.0"

register_auto_classes()
register_pipeline()
register_classification_pipeline()

__all__ = [
    "ASTConfig",
    "ASTFeatureExtractor",
    "ASTForAudioClassification",
    "ASTModel",
    "ASTPreTrainedModel",
    "AudioTaggingPipeline",
    "compute_normalization_stats",
    "optimize_for_inference",
    "register_auto_classes",
]
