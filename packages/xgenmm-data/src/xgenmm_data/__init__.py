"""xgenmm-data: LLaVA-format data for xGen-MM — mixtures, path mapping, the phi_3 template, label masks,
token-accurate batching and packing, webdataset shards and bad-input reports.

Standalone: the image processor, the tokenizer and `vision_tokens_for(image_size)` are injected; this package
imports no vision / language-model package.
"""

from .collate import DataCollator
from .dataset import SupervisedDataset
from .processing import (
    BadSample,
    SampleProcessor,
    call_processor,
    image_header_size,
    prepare_conversations,
    record_messages,
)
from .samplers import LengthGroupedSampler, PackedBatchSampler, pack_best_fit_decreasing, padding_efficiency
from .sources import (
    DataError,
    Mixture,
    PathMap,
    SampleRef,
    SourceSpec,
    load_mixture,
    load_records,
    mixture_indices,
    resolve_image_path,
)
from .templates import (
    PHI3_SYSTEM,
    TEMPLATES,
    ChatTemplate,
    Segment,
    TokenizerChatTemplate,
    build_prompt,
    get_template,
    register_template,
)
from .tokenization import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    EncodedConversation,
    TokenizationMismatch,
    encode_conversation,
    tokenize_conversation,
)

__version__ = "0.1.0"

__all__ = [
    "BadSample",
    "ChatTemplate",
    "DataCollator",
    "DataError",
    "EncodedConversation",
    "IGNORE_INDEX",
    "IMAGE_TOKEN",
    "LengthGroupedSampler",
    "Mixture",
    "PHI3_SYSTEM",
    "PackedBatchSampler",
    "PathMap",
    "SampleProcessor",
    "SampleRef",
    "Segment",
    "SourceSpec",
    "SupervisedDataset",
    "TEMPLATES",
    "TokenizationMismatch",
    "TokenizerChatTemplate",
    "build_prompt",
    "call_processor",
    "encode_conversation",
    "get_template",
    "image_header_size",
    "load_mixture",
    "load_records",
    "mixture_indices",
    "pack_best_fit_decreasing",
    "padding_efficiency",
    "prepare_conversations",
    "record_messages",
    "register_template",
    "resolve_image_path",
    "tokenize_conversation",
]
