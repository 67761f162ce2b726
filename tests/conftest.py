"""Shared fixtures: the offline GPT-OSS tokenizer (built once, cached on disk) and openai-harmony.

The whole suite runs without network: HF_HUB_OFFLINE is set before anything imports the hub.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer_dir():
    """Folder of the verified offline tokenizer (tokenizer.json + o200k_base.tiktoken)."""
    from osstune.engine.data.tokenizer import offline_tokenizer_dir

    return offline_tokenizer_dir()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The real GPT-OSS tokenizer as a transformers PreTrainedTokenizerFast, no hub needed."""
    from osstune.engine.data.tokenizer import load_offline_tokenizer

    return load_offline_tokenizer()


@pytest.fixture(scope="session")
def harmony_encoding(tokenizer_dir):
    """openai-harmony's GPT-OSS encoding, reading the verified vocabulary offline."""
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(tokenizer_dir)
    openai_harmony = pytest.importorskip("openai_harmony")
    return openai_harmony.load_harmony_encoding(openai_harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
