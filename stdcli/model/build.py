"""Build Video-LLMs from scratch, offline: tokenizer, processor, config and randomly initialised model.

Used by the tests (tiny checkpoints saved and loaded by path like a downloaded one), by the benchmarks (the real
architectures at real scale with random weights) and by the training of the built-in model. Every piece is the class
the real checkpoint uses, so nothing here is a stand-in: only the sizes and the weights are made up.

The real numbers below come from the checkpoints' config.json / tokenizer_config.json / chat_template.json files
(Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2-VL-2B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen3-VL-8B-Instruct,
Qwen/Qwen3-VL-2B-Instruct, Qwen/Qwen3.5-9B, Qwen/Qwen3.5-27B) and, for LLaVA-OneVision, from transformers'
conversion script for llava-hf/llava-onevision-qwen2-7b-ov-hf (Qwen2-7B-Instruct text model, SigLIP so400m vision
tower with its last layer dropped, two added tokens, vocabulary padded to a multiple of 64).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    AddedToken,
    GenerationConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5Tokenizer,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX as QWEN3_5_PRETOKENIZE_REGEX

FAMILIES = ("qwen2-vl", "qwen2.5-vl", "llava-ov", "qwen3-vl", "qwen3.5")
# Families with Qwen3-VL's vision side: its processor (16-pixel patches, a timestamp per temporal patch) and prompts
QWEN3_VISION = ("qwen3-vl", "qwen3.5")

# --- tokenizer ----------------------------------------------------------------------------------------------------

# Added tokens in id order, right after the byte-level BPE vocabulary (151643 in the real Qwen2 tokenizer);
# True = special (skipped by decode(skip_special_tokens=True)).
_QWEN2_CHAT_TOKENS = (("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True))
_QWEN2_VL_TOKENS = _QWEN2_CHAT_TOKENS + tuple(
    (token, True)
    for token in (
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
        "<|quad_start|>",
        "<|quad_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    )
)
_QWEN2_5_VL_TOKENS = _QWEN2_VL_TOKENS + tuple(
    (token, False)
    for token in (
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
    )
)
# Qwen3's tokenizer (Qwen3-VL, Qwen3.5): Qwen2.5-VL's 22 added tokens, then the tool-response and thinking tags
_QWEN3_TOKENS = _QWEN2_5_VL_TOKENS + tuple(
    (token, False) for token in ("<tool_response>", "</tool_response>", "<think>", "</think>")
)
ADDED_TOKENS: dict[str, tuple[tuple[str, bool], ...]] = {
    "qwen2-vl": _QWEN2_VL_TOKENS,
    "qwen2.5-vl": _QWEN2_5_VL_TOKENS,
    "llava-ov": _QWEN2_CHAT_TOKENS + (("<image>", True), ("<video>", True)),
    "qwen3-vl": _QWEN3_TOKENS,
    "qwen3.5": _QWEN3_TOKENS,
}
# The byte-level BPE vocabulary of the real tokenizer: added tokens start here (Qwen2's 151643; Qwen3.5's larger BPE
# puts <|endoftext|> at 248044, <|vision_start|> at 248053 and <|video_pad|> at 248057, as its config.json says)
REAL_BPE_SIZE = {"qwen2-vl": 151643, "qwen2.5-vl": 151643, "llava-ov": 151643, "qwen3-vl": 151643, "qwen3.5": 248044}
# Qwen3.5's tokenizer class splits words before BPE with a pattern of its own (letters with their combining marks)
TOKENIZER_CLASSES = {"qwen3.5": (Qwen3_5Tokenizer, QWEN3_5_PRETOKENIZE_REGEX)}
TOKENIZER_SETTINGS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None, "unk_token": None}
MODEL_MAX_LENGTH = {"qwen2-vl": 32768, "qwen2.5-vl": 131072, "llava-ov": 32768, "qwen3-vl": 262144, "qwen3.5": 262144}

# Chat templates exactly as shipped: Qwen2-VL and Qwen2.5-VL share chat_template.json; LLaVA-OneVision's is the one
# transformers' conversion script wrote for llava-hf (images, then videos, then text of each message).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
LLAVA_OV_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen3-VL's chat_template.json (the Instruct checkpoints share it), kept verbatim in a file of its own: unlike
# Qwen2-VL's it adds no default system prompt, and it knows tools and tool responses.
QWEN3_VL_CHAT_TEMPLATE = (Path(__file__).parent / "qwen3_vl_chat_template.jinja").read_text(encoding="utf-8")
# Qwen3.5's (Qwen/Qwen3.5-27B's; the dense checkpoints share it), verbatim too: a thinking model's template, which opens
# "<think>\n" after the generation prompt unless enable_thinking=False closes an empty thought (prompts.py passes it).
QWEN3_5_CHAT_TEMPLATE = (Path(__file__).parent / "qwen3_5_chat_template.jinja").read_text(encoding="utf-8")
CHAT_TEMPLATES = {
    "qwen2-vl": QWEN2_VL_CHAT_TEMPLATE,
    "qwen2.5-vl": QWEN2_VL_CHAT_TEMPLATE,
    "llava-ov": LLAVA_OV_CHAT_TEMPLATE,
    "qwen3-vl": QWEN3_VL_CHAT_TEMPLATE,
    "qwen3.5": QWEN3_5_CHAT_TEMPLATE,
}

# Enough varied English for a few hundred merges; the byte alphabet covers everything else.
BUILTIN_CORPUS = (
    "A red circle moves from the left side of the screen to the right side.",
    "A blue square stays in the middle while a green triangle bounces up and down.",
    "The yellow star grows bigger, then shrinks, then disappears at the end of the video.",
    "Two shapes move towards each other and meet in the center of the frame.",
    "How many objects are there? There are three objects: a circle, a square and a triangle.",
    "What color is the shape that moves fastest? The purple rectangle moves fastest.",
    "The background is black. A white line rotates slowly around its center.",
    "What happens in this video? A small orange ball falls down and rolls to the corner.",
    "Describe the motion of the circle. It moves in a straight line at a constant speed.",
    "Which shape appears first? The green square appears first, followed by a pink circle.",
    "The camera does not move. Everything in the scene is flat and simple.",
    "Is the triangle above or below the square? The triangle is above the square.",
    "Answer the question about the video with a short sentence.",
    "You are a helpful assistant. Please describe what you see in detail.",
    "The person walks into the room, picks up a cup, and drinks some water.",
    "A dog runs across the park, chasing a ball thrown by a child.",
    "Cars drive along the road in the rain while people wait at the bus stop.",
    "First the light turns red, then yellow, and finally green again.",
    "She opens the book, reads a page, and closes it with a smile.",
    "The numbers one, two, three, four, five, six, seven, eight, nine and ten.",
    "Left, right, up, down, fast, slow, big, small, near, far, before, after.",
    "The video is about cooking: slicing vegetables, boiling water and stirring soup.",
)


def _train_byte_level_bpe(corpus: Iterable[str], vocab_size: int, pattern: str
                          ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges of a byte-level BPE with the tokenizer class's pre-tokenizer `pattern` (so merges
    look like the real ones)."""
    tokenizer = Tokenizer(BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(corpus, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    # tokenizers writes merges as ["a", "b"] pairs or as "a b" strings depending on its version
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return model["vocab"], merges


def make_tokenizer(family: str, corpus: Iterable[str] | None = None, vocab_size: int = 400
                   ) -> Qwen2Tokenizer | Qwen3_5Tokenizer:
    """A small byte-level BPE in the real tokenizer class (the one transformers loads the family's checkpoints with:
    Qwen2Tokenizer, Qwen3.5's own) with the family's added tokens right after the BPE ids, in the real order, and its
    real chat template. Any UTF-8 text round-trips."""
    _check_family(family)
    cls, pattern = TOKENIZER_CLASSES.get(family, (Qwen2Tokenizer, PRETOKENIZE_REGEX))
    vocab, merges = _train_byte_level_bpe(BUILTIN_CORPUS if corpus is None else corpus, vocab_size, pattern)
    base = len(vocab)
    added = ADDED_TOKENS[family]
    # Giving the added tokens their ids in the vocabulary fixes their order; add_tokens then only marks them.
    vocab = {**vocab, **{token: base + i for i, (token, _) in enumerate(added)}}
    tokenizer = cls(
        vocab=vocab,
        merges=merges,
        model_max_length=MODEL_MAX_LENGTH[family],
        clean_up_tokenization_spaces=False,
        **TOKENIZER_SETTINGS,
    )
    tokenizer.add_tokens([AddedToken(token, special=special, normalized=False) for token, special in added])
    tokenizer.chat_template = CHAT_TEMPLATES[family]
    return tokenizer


def special_token_ids(family: str, tokenizer=None) -> dict[str, int]:
    """Ids of the family's added tokens: from the tokenizer, or the real checkpoint's when there is none."""
    _check_family(family)
    tokens = [token for token, _ in ADDED_TOKENS[family]]
    if tokenizer is None:
        return {token: REAL_BPE_SIZE[family] + i for i, token in enumerate(tokens)}
    return {token: tokenizer.convert_tokens_to_ids(token) for token in tokens}


# --- processor ----------------------------------------------------------------------------------------------------

# Real preprocessing defaults. Qwen: images 56*56..28*28*16384 pixels (preprocessor_config.json); videos use the Qwen
# reference per-frame bounds 128*28*28..768*28*28 (transformers' Qwen2VLVideoProcessor defaults). LLaVA-OV: 384x384.
QWEN_PROCESSOR = {
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_min_pixels": 56 * 56,
    "image_max_pixels": 28 * 28 * 16384,
    "min_pixels": 128 * 28 * 28,
    "max_pixels": 768 * 28 * 28,
}
LLAVA_OV_PROCESSOR = {"size": 384, "patch_size": 14}
# Qwen3-VL (preprocessor_config.json, video_preprocessor_config.json): 16-pixel patches, images 65536..16777216
# pixels; the video processor's size is 4096..25165824 pixels (Qwen3VLVideoProcessor reads it as the bounds of a
# whole clip; prompts.py takes the per-frame bounds of qwen-vl-utils instead, which lie within it). Both normalise
# with mean = std = 0.5. Qwen3.5 ships the same processors.
QWEN3_VL_PROCESSOR = {
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_min_pixels": 65536,
    "image_max_pixels": 16777216,
    "min_pixels": 4096,
    "max_pixels": 25165824,
}
QWEN3_VL_IMAGE_MEAN = QWEN3_VL_IMAGE_STD = [0.5, 0.5, 0.5]
PROCESSOR_DEFAULTS = {
    "qwen2-vl": QWEN_PROCESSOR,
    "qwen2.5-vl": QWEN_PROCESSOR,
    "llava-ov": LLAVA_OV_PROCESSOR,
    "qwen3-vl": QWEN3_VL_PROCESSOR,
    "qwen3.5": QWEN3_VL_PROCESSOR,
}
# Tiny checkpoints: every video frame becomes 56x56 pixels = 2x2 merged Qwen tokens / 2x2 pooled LLaVA tokens
# (Qwen3-VL: 64x64 pixels, its 32-pixel merged patches).
_TINY_QWEN_PROCESSOR = {key: 56 * 56 for key in ("image_min_pixels", "image_max_pixels", "min_pixels", "max_pixels")}
_TINY_QWEN3_PROCESSOR = {key: 64 * 64 for key in ("image_min_pixels", "image_max_pixels", "min_pixels", "max_pixels")}
TINY_PROCESSOR = {
    "qwen2-vl": _TINY_QWEN_PROCESSOR,
    "qwen2.5-vl": _TINY_QWEN_PROCESSOR,
    "llava-ov": {"size": 56},
    "qwen3-vl": _TINY_QWEN3_PROCESSOR,
    "qwen3.5": _TINY_QWEN3_PROCESSOR,
}
PROCESSOR_CLASSES = {
    "qwen2-vl": Qwen2VLProcessor,
    "qwen2.5-vl": Qwen2_5_VLProcessor,
    "llava-ov": LlavaOnevisionProcessor,
    "qwen3-vl": Qwen3VLProcessor,
    "qwen3.5": Qwen3VLProcessor,
}


def _qwen_processor(family: str, tokenizer, options: Mapping[str, int]):
    structure = {key: options[key] for key in ("patch_size", "temporal_patch_size", "merge_size")}
    # Pass `size` (a fresh dict), never min_pixels/max_pixels: transformers 5.17 writes those into the class-level
    # default `size`, changing every processor built afterwards in the process.
    image_size = {"shortest_edge": options["image_min_pixels"], "longest_edge": options["image_max_pixels"]}
    video_size = {"shortest_edge": options["min_pixels"], "longest_edge": options["max_pixels"]}
    if family in QWEN3_VISION:
        normalize = {"image_mean": QWEN3_VL_IMAGE_MEAN, "image_std": QWEN3_VL_IMAGE_STD}
        image = Qwen2VLImageProcessor(size=image_size, **structure, **normalize)
        video: Any = Qwen3VLVideoProcessor(size=video_size, **structure, **normalize)
    else:
        image = Qwen2VLImageProcessor(size=image_size, **structure)
        video = Qwen2VLVideoProcessor(size=video_size, **structure)
    return PROCESSOR_CLASSES[family](
        image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=CHAT_TEMPLATES[family]
    )


def _llava_ov_processor(tokenizer, options: Mapping[str, int]) -> LlavaOnevisionProcessor:
    edge, patch = options["size"], options["patch_size"]
    size = {"height": edge, "width": edge}
    image = LlavaOnevisionImageProcessor(size=dict(size), image_grid_pinpoints=anyres_grid_pinpoints(edge))
    video = LlavaOnevisionVideoProcessor(size=dict(size))
    return LlavaOnevisionProcessor(
        image_processor=image,
        tokenizer=tokenizer,
        video_processor=video,
        num_image_tokens=(edge // patch) ** 2,  # SigLIP, "full" feature strategy: one token per patch, no CLS
        vision_feature_select_strategy="full",
        chat_template=LLAVA_OV_CHAT_TEMPLATE,
    )


def anyres_grid_pinpoints(edge: int) -> list[list[int]]:
    """LLaVA-OneVision's anyres grid: 1..6 tiles of the base resolution on each side (384 -> [[384, 384], ...])."""
    return [[edge * rows, edge * cols] for rows in range(1, 7) for cols in range(1, 7)]


def make_processor(family: str, tokenizer, **video_options: int):
    """The family's real processor class with its image and video processors at the family defaults.

    Options: Qwen `min_pixels`/`max_pixels` (video: per frame; Qwen3-VL: its video processor's `size`),
    `image_min_pixels`/`image_max_pixels`, `patch_size`,
    `temporal_patch_size`, `merge_size`; LLaVA-OV `size` (square edge of images and frames) and `patch_size`.
    """
    _check_family(family)
    defaults = PROCESSOR_DEFAULTS[family]
    unknown = set(video_options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {family} processor options {sorted(unknown)}; known: {sorted(defaults)}")
    options = {**defaults, **video_options}
    if family == "llava-ov":
        return _llava_ov_processor(tokenizer, options)
    return _qwen_processor(family, tokenizer, options)


# --- config -------------------------------------------------------------------------------------------------------

# Real shapes, as in the checkpoints' config.json (token ids come from special_token_ids).
QWEN2_VL_7B = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 3584,  # Qwen2-VL's vision `hidden_size` is the merger's output width = the text width
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "hidden_act": "quick_gelu",
        "initializer_range": 0.02,
    },
    "tie_word_embeddings": False,
}
# Qwen/Qwen2-VL-72B-Instruct: the 7B's vision tower (its merger widened to 8192) and an 80-layer language model of
# 64 query heads over 8 KV heads: 145 GB in bfloat16, more than one GPU of 141 GB holds (engine/tensor_parallel.py).
QWEN2_VL_72B = {
    "text_config": {
        **QWEN2_VL_7B["text_config"],
        "hidden_size": 8192,
        "intermediate_size": 29568,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
    },
    "vision_config": {**QWEN2_VL_7B["vision_config"], "hidden_size": 8192},
    "tie_word_embeddings": False,
}
QWEN2_VL_2B = {
    "text_config": {
        **QWEN2_VL_7B["text_config"],
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
    "vision_config": {**QWEN2_VL_7B["vision_config"], "hidden_size": 1536},
    "tie_word_embeddings": True,
}
QWEN2_5_VL_7B = {
    "text_config": {**QWEN2_VL_7B["text_config"], "max_position_embeddings": 128000},
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "out_hidden_size": 3584,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
    },
    "tie_word_embeddings": False,
}
LLAVA_OV_7B = {
    "text_config": {
        "model_type": "qwen2",
        "vocab_size": 152128,  # Qwen2-7B-Instruct's 152064 + <image>, <video>, padded to a multiple of 64
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 26,  # so400m has 27; the last is dropped (features come from it anyway)
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
        "vision_use_head": False,
    },
    "projector_hidden_act": "gelu",
    "vision_feature_select_strategy": "full",
    "vision_feature_layer": -1,
    "vision_aspect_ratio": "anyres_max_9",
    "image_grid_pinpoints": anyres_grid_pinpoints(384),
    "multimodal_projector_bias": True,
    "tie_word_embeddings": False,
}

# Qwen3-VL, from Qwen/Qwen3-VL-8B-Instruct's and Qwen/Qwen3-VL-2B-Instruct's config.json (the Qwen3-8B / Qwen3-1.7B
# language models: head_dim 128, q/k RMSNorm, no qkv bias; interleaved M-RoPE over sections 24/20/20 of the 64
# frequencies; a SigLIP-2-style vision tower with 16-pixel patches, learned position embeddings resampled per grid,
# and DeepStack mergers feeding three of its layers into the first three language layers). Source: the values of
# those hub files (written here from them, not downloaded: no network on the build machines), with transformers
# 5.23's Qwen3VLConfig field names (rope_scaling is rope_parameters). Parameter counts: 8,767,123,696 (8B, the
# "8.77B" of the model card) and 2,127,532,032 (2B), checked in tests/test_models.py.
QWEN3_VL_8B = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 4096,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
        "hidden_act": "gelu_pytorch_tanh",
        "initializer_range": 0.02,
    },
    "tie_word_embeddings": False,
}
QWEN3_VL_2B = {
    "text_config": {
        **QWEN3_VL_8B["text_config"],
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        **QWEN3_VL_8B["vision_config"],
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "out_hidden_size": 2048,
        "deepstack_visual_indexes": [5, 11, 17],
    },
    "tie_word_embeddings": True,
}

# Qwen3.5, from Qwen/Qwen3.5-9B's and Qwen/Qwen3.5-27B's config.json: 3 Gated DeltaNet layers for each full-attention
# one (full attention at layers 3, 7, ...: a quarter of the layers hold a KV cache), the linear layers with 16 key
# heads and 32 (9B) or 48 (27B) value heads of 128 dimensions and a causal convolution of width 4; the full-attention
# layers with gated output, q/k RMSNorm, 256-dimensional heads of which a quarter rotates (interleaved M-RoPE over
# sections 11/11/10 of the 32 frequencies); Qwen3-VL's vision tower without DeepStack. The multi-token-prediction
# head the checkpoints also hold (`mtp.*`) is not part of transformers' model, so not of ours. Parameter counts of
# the model built here: checked in tests/test_models.py.
QWEN3_5_9B = {
    "text_config": {
        "vocab_size": 248320,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 32,
        "full_attention_interval": 4,  # Qwen3_5TextConfig lays out layer_types from it
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": 32,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "mrope_section": [11, 11, 10],
            "mrope_interleaved": True,
            "partial_rotary_factor": 0.25,
        },
        "tie_word_embeddings": False,
    },
    # Qwen3-VL-8B's vision tower without DeepStack
    "vision_config": {key: value for key, value in QWEN3_VL_8B["vision_config"].items()
                      if key != "deepstack_visual_indexes"},
    "tie_word_embeddings": False,
}
QWEN3_5_27B = {
    "text_config": {
        **QWEN3_5_9B["text_config"],
        "hidden_size": 5120,
        "intermediate_size": 17408,
        "num_hidden_layers": 64,
        "num_attention_heads": 24,
        "linear_num_value_heads": 48,
    },
    "vision_config": {**QWEN3_5_9B["vision_config"], "out_hidden_size": 5120},
    "tie_word_embeddings": False,
}

# Tiny: 2 layers, 4 query heads sharing 2 KV heads (GQA), a 2-block vision tower with the real patch/merge sizes.
_TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
_TINY_MROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}  # sums to head_dim / 2
TINY_QWEN2_VL = {
    "text_config": {**_TINY_TEXT, "rope_parameters": _TINY_MROPE},
    "vision_config": {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "mlp_ratio": 2,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": 0.2,
    },
    "tie_word_embeddings": False,
}
TINY_QWEN2_5_VL = {
    "text_config": {**_TINY_TEXT, "rope_parameters": _TINY_MROPE},
    "vision_config": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,  # 2x2 merged tokens per window: windowed and full attention blocks both run
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
        "initializer_range": 0.2,
    },
    "tie_word_embeddings": False,
}
TINY_QWEN3_VL = {
    "text_config": {
        **_TINY_TEXT,
        "head_dim": 16,
        "attention_bias": False,
        # 8 frequencies: temporal 4, height 2, width 2, interleaved as in the real 24/20/20 of 64
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
    },
    "vision_config": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 4,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,
        "num_position_embeddings": 64,  # an 8x8 learned grid, resampled to each frame's
        "deepstack_visual_indexes": [0],  # the first block's features are added to the first language layer
        "hidden_act": "gelu_pytorch_tanh",
        "initializer_range": 0.2,
    },
    "tie_word_embeddings": False,
}
# Both layer kinds, small: 4 layers, full attention every second one; one linear key head shared by two value heads
# (the real 16 / 32 grouping), the real convolution width; a quarter of the 32-dimensional heads rotates, as in the
# real 256-dimensional ones (4 frequencies: temporal 2, height 1, width 1, interleaved).
TINY_QWEN3_5 = {
    "text_config": {
        **_TINY_TEXT,
        "num_hidden_layers": 4,
        "full_attention_interval": 2,
        "head_dim": 32,
        "linear_num_key_heads": 1,
        "linear_num_value_heads": 2,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_conv_kernel_dim": 4,
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "mrope_section": [2, 1, 1],
            "mrope_interleaved": True,
            "partial_rotary_factor": 0.25,
        },
    },
    "vision_config": {key: value for key, value in TINY_QWEN3_VL["vision_config"].items()
                      if key != "deepstack_visual_indexes"},
    "tie_word_embeddings": False,
}
TINY_LLAVA_OV = {
    "text_config": {
        **_TINY_TEXT,
        "model_type": "qwen2",
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 56,
        "patch_size": 14,
        "vision_use_head": False,
    },
    "projector_hidden_act": "gelu",
    "vision_feature_select_strategy": "full",
    "vision_feature_layer": -1,
    "vision_aspect_ratio": "anyres_max_9",
    "image_grid_pinpoints": anyres_grid_pinpoints(56),
    "multimodal_projector_bias": True,
    "tie_word_embeddings": False,
}

# Std of the random weights of the language model (text_config.initializer_range; the real models were initialised
# with 0.02). Chosen so the logits are far from flat (std ~1.6-2.4 over the vocabulary) and greedy decoding does not
# lock onto one token: at 0.02 a random 2B/7B model repeats one token after a few steps (checked on an H100, video
# prompts of ~1200-3200 tokens); at 0.04 48 greedy tokens were all distinct. Tiny models (width 64) need 0.2.
RANDOM_INIT_STD = {"tiny": 0.2, "2b": 0.04, "7b": 0.04, "8b": 0.04, "9b": 0.04, "27b": 0.04, "72b": 0.04}

SHAPES: dict[tuple[str, str], dict[str, Any]] = {
    ("qwen2-vl", "tiny"): TINY_QWEN2_VL,
    ("qwen2-vl", "2b"): QWEN2_VL_2B,
    ("qwen2-vl", "7b"): QWEN2_VL_7B,
    ("qwen2-vl", "72b"): QWEN2_VL_72B,
    ("qwen2.5-vl", "tiny"): TINY_QWEN2_5_VL,
    ("qwen2.5-vl", "7b"): QWEN2_5_VL_7B,
    ("llava-ov", "tiny"): TINY_LLAVA_OV,
    ("llava-ov", "7b"): LLAVA_OV_7B,
    ("qwen3-vl", "tiny"): TINY_QWEN3_VL,
    ("qwen3-vl", "2b"): QWEN3_VL_2B,
    ("qwen3-vl", "8b"): QWEN3_VL_8B,
    ("qwen3.5", "tiny"): TINY_QWEN3_5,
    ("qwen3.5", "9b"): QWEN3_5_9B,
    ("qwen3.5", "27b"): QWEN3_5_27B,
}
# The scale `--random-init` builds for a family named without one: the size of its default alias.
DEFAULT_SCALES = {"qwen2-vl": "7b", "qwen2.5-vl": "7b", "llava-ov": "7b", "qwen3-vl": "8b", "qwen3.5": "9b"}
CONFIG_CLASSES = {
    "qwen2-vl": Qwen2VLConfig,
    "qwen2.5-vl": Qwen2_5_VLConfig,
    "llava-ov": LlavaOnevisionConfig,
    "qwen3-vl": Qwen3VLConfig,
    "qwen3.5": Qwen3_5Config,
}
MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen2-vl": Qwen2VLForConditionalGeneration,
    "qwen2.5-vl": Qwen2_5_VLForConditionalGeneration,
    "llava-ov": LlavaOnevisionForConditionalGeneration,
    "qwen3-vl": Qwen3VLForConditionalGeneration,
    "qwen3.5": Qwen3_5ForConditionalGeneration,
}


def _token_id_fields(family: str, ids: Mapping[str, int]) -> dict[str, Any]:
    """Config fields naming the placeholder and chat tokens (top level: vision ids; text config: bos/eos/pad)."""
    text = {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": None}
    if family == "llava-ov":
        return {"image_token_index": ids["<image>"], "video_token_index": ids["<video>"], "text_config": text}
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "text_config": text,
    }


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `extra`, nested dicts (text_config, vision_config, rope_parameters) merged key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def padded_vocab_size(tokenizer, multiple: int = 64) -> int:
    """Embedding rows for a tokenizer: its length rounded up, as the real checkpoints pad theirs."""
    return -(-len(tokenizer) // multiple) * multiple


def make_config(
    family: str, scale: str = "tiny", vocab_size: int | None = None, tokenizer=None, **overrides: Any
) -> PretrainedConfig:
    """The family's real config class at `scale` ("tiny", "7b"; "2b" for qwen2-vl; qwen3-vl: "tiny", "2b", "8b";
    qwen3.5: "tiny", "9b", "27b").

    Token ids come from `tokenizer`; without one, a tiny config uses make_tokenizer(family)'s and a real-scale config
    the real checkpoint's. `vocab_size` defaults to the padded tokenizer length (tiny) or the real size. `overrides`
    are config fields; nested dicts (text_config={"num_hidden_layers": 4}) are merged into the defaults.
    """
    _check_family(family)
    if (family, scale) not in SHAPES:
        scales = [s for f, s in SHAPES if f == family]
        raise ValueError(f"no {scale!r} scale for {family}; available: {scales}")
    if tokenizer is None and scale == "tiny":
        tokenizer = make_tokenizer(family)
    spec = _merge(SHAPES[(family, scale)], _token_id_fields(family, special_token_ids(family, tokenizer)))
    spec["text_config"]["initializer_range"] = RANDOM_INIT_STD[scale]
    if vocab_size is None and tokenizer is not None:
        # never fewer embedding rows than token ids; a real scale keeps its real (larger) vocabulary
        vocab_size = max(padded_vocab_size(tokenizer), 0 if scale == "tiny" else spec["text_config"]["vocab_size"])
    if vocab_size is not None:
        spec["text_config"]["vocab_size"] = vocab_size
    spec = _merge(spec, overrides)
    return CONFIG_CLASSES[family](**spec)


# --- model --------------------------------------------------------------------------------------------------------


def generation_config_for(config: PretrainedConfig) -> GenerationConfig:
    """Greedy by default; stops at <|im_end|> or <|endoftext|> like the real generation_config.json."""
    text = config.get_text_config()
    end_of_turn, end_of_text = text.eos_token_id, text.bos_token_id  # Qwen2: bos id is <|endoftext|>
    return GenerationConfig(bos_token_id=end_of_text, eos_token_id=[end_of_turn, end_of_text], pad_token_id=end_of_text)


def build_random_model(
    family: str, config: PretrainedConfig, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu",
    shard: Callable[[PreTrainedModel], None] | None = None,
) -> PreTrainedModel:
    """The family's real model class with random weights, the same for the same seed, device and dtype; eval mode.

    Weights follow the config's initializer_range: make_config sets RANDOM_INIT_STD, which keeps logits from being
    flat and greedy outputs varied. `shard` splits the model in place (tensor parallelism): it is then built on the
    meta device, split, and only its part gets memory and random weights (the same on every rank for what each
    rank holds whole, since each draws from the same seed in the same order).
    """
    _check_family(family)
    torch.manual_seed(seed)
    # Built directly on the device in the target dtype: a 7B model never materialises in float32 on the host.
    with torch.device(device if shard is None else "meta"):
        model = MODEL_CLASSES[family]._from_config(config, dtype=dtype)
    if shard is not None:
        shard(model)
        model.to_empty(device=device)
        for module in model.modules():  # the meta build marked them initialized
            module._is_hf_initialized = False
        model.initialize_weights()  # rotary frequencies included: to_empty left every buffer undefined
        model.tie_weights()
    model.generation_config = generation_config_for(config)
    return model.eval()


def save_tiny_checkpoint(family: str, path: str | Path, seed: int = 0, **config_overrides: Any) -> Path:
    """Tokenizer, processor and a tiny random model saved (safetensors) into `path`, ready for from_pretrained."""
    path = Path(path)
    tokenizer = make_tokenizer(family)
    processor = make_processor(family, tokenizer, **TINY_PROCESSOR[family])
    config = make_config(family, "tiny", tokenizer=tokenizer, **config_overrides)
    model = build_random_model(family, config, seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
