"""xgenmm-data: LLaVA-format data for xGen-MM — mixtures, path mapping, the phi_3 template, label masks,
token-accurate batching and packing, webdataset shards and bad-input reports; for pre-training, streamed caption
and interleaved webdataset shards mixed by weight with an exactly resumable position.

Standalone: the image processor, the tokenizer and `vision_tokens_for(image_size)` are injected; this package
imports no vision / language-model package.
"""

from .batchers import Batched, PackedRows
from .collate import DataCollator
from .dataset import SupervisedDataset
from .interleaved import write_interleaved_shards
from .pretrain import PretrainProcessor
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
from .stream import ShardStream, StreamMixture, StreamSource, iter_shard, split_shards
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
from .webformats import END_OF_CHUNK, caption_text, interleaved_text, parse_sample

__version__ = "0.1.0"

__all__ = [
    "BadSample",
    "Batched",
    "build_prompt",
    "call_processor",
    "caption_text",
    "ChatTemplate",
    "DataCollator",
    "DataError",
    "encode_conversation",
    "EncodedConversation",
    "END_OF_CHUNK",
    "get_template",
    "IGNORE_INDEX",
    "image_header_size",
    "IMAGE_TOKEN",
    "interleaved_text",
    "iter_shard",
    "LengthGroupedSampler",
    "load_mixture",
    "load_records",
    "Mixture",
    "mixture_indices",
    "pack_best_fit_decreasing",
    "PackedBatchSampler",
    "PackedRows",
    "padding_efficiency",
    "parse_sample",
    "PathMap",
    "PHI3_SYSTEM",
    "prepare_conversations",
    "PretrainProcessor",
    "register_template",
    "resolve_image_path",
    "SampleProcessor",
    "SampleRef",
    "Segment",
    "ShardStream",
    "SourceSpec",
    "split_shards",
    "StreamMixture",
    "StreamSource",
    "SupervisedDataset",
    "TEMPLATES",
    "TokenizationMismatch",
    "record_messages",
    "tokenize_conversation",
    "TokenizerChatTemplate",
    "write_interleaved_shards",
]
