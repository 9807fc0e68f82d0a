"""ast_hf: the Audio Spectrogram Transformer (Gong, Chung, Glass, Interspeech 2021) as a Hugging Face model.

Importing the package registers it with transformers' Auto classes under model_type "ast_hf", and the
"audio-tagging" (`ast_hf.tagging`) and "audio-feature-extraction" (`ast_hf.embeddings`) pipelines with
transformers' pipeline registry; "audio-classification" then decodes files for AST models as every other ast_hf
entry point does (`ast_hf.classification_pipeline`).
"""

from .classification_pipeline import register_classification_pipeline
from .configuration_ast import ASTConfig
from .embeddings import AudioFeatureExtractionPipeline
from .embeddings import register_pipeline as register_embedding_pipeline
from .fast_inference import optimize_for_inference
from .feature_extraction_ast import ASTFeatureExtractor
from .modeling_ast import ASTForAudioClassification, ASTForPreTraining, ASTModel, ASTPreTrainedModel
from .registration import register_auto_classes
from .stats import compute_normalization_stats
from .tagging import AudioTaggingPipeline, register_pipeline

__version__ = "0.3.0"

register_auto_classes()
register_pipeline()
register_embedding_pipeline()
register_classification_pipeline()

__all__ = [
    "ASTConfig",
    "ASTFeatureExtractor",
    "ASTForAudioClassification",
    "ASTForPreTraining",
    "ASTModel",
    "ASTPreTrainedModel",
    "AudioFeatureExtractionPipeline",
    "AudioTaggingPipeline",
    "compute_normalization_stats",
    "optimize_for_inference",
    "register_auto_classes",
]
