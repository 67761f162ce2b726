"""The offline GPT-OSS tokenizer: verified vocabulary, cache, specials, equality with tiktoken."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

import osstune.engine.data.tokenizer as tk
from osstune.engine.data.tokenizer import (
    TIKTOKEN_FILE,
    TIKTOKEN_SHA256,
    TokenizerError,
    load_offline_tokenizer,
    load_tokenizer,
    offline_tokenizer_dir,
    parse_quicktok_vocab,
)

TEXTS = [
    "Hello, world!", "  leading spaces and\ttabs\n\n\nnewlines\r\n", "don't they'LL WE'RE",
    "numbers 1234567 3.14159 1e-9", "über naïve façade ǅemal", "日本語のテキストと中文文本",
    "Кириллица и ελληνικά", "مرحبا بالعالم", "emoji 🙂👍🏽👨‍👩‍👧 flags 🇳🇴",
    "code: def f(x):\n    return x**2",
    "<|end|><|start|>assistant<|message|>", "a" * 3000, "\u200b\u00a0\ufeff zero-width", "",
    "URL https://example.com/a/b?c=d&e=f#g", "////\\\\\\ ))((  ]]]", "x" + " " * 50 + "y",
]


def test_verified_vocabulary_and_files(tokenizer_dir):
    data = (tokenizer_dir / TIKTOKEN_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == TIKTOKEN_SHA256
    assert (tokenizer_dir / "tokenizer.json").is_file()


def test_specials_and_size(tokenizer):
    assert len(tokenizer) == 201088
    expected = {"<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
                "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006,
                "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012,
                "<|reserved_200013|>": 200013, "<|reserved_201087|>": 201087}
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in expected} == expected
    assert tokenizer.eos_token_id == 200002 and tokenizer.pad_token_id == 199999


def test_same_ids_as_tiktoken(tokenizer, tokenizer_dir):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(tokenizer_dir / TIKTOKEN_FILE))
    enc = tiktoken.Encoding("o200k", pat_str=tk.O200K_PATTERN, mergeable_ranks=ranks,
                            special_tokens={})
    from osstune.engine.data.harmony import plain_text_encoder

    plain = plain_text_encoder(tokenizer)
    for text in TEXTS:
        assert plain.encode(text, add_special_tokens=False).ids == enc.encode_ordinary(text), text
        assert tokenizer.decode(enc.encode_ordinary(text)) == text


def test_cached_build_is_reused(tokenizer_dir, monkeypatch):
    def no_rebuild():
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(tk, "_quicktok_vocab", no_rebuild)
    start = time.perf_counter()
    assert offline_tokenizer_dir() == tokenizer_dir
    assert time.perf_counter() - start < 1.0


def test_tampered_vocabulary_is_refused(tmp_path, monkeypatch):
    real = tk._quicktok_vocab()
    tampered = bytearray(real)
    tampered[-1] ^= 1  # flip one bit of the last rank
    monkeypatch.setattr(tk, "_quicktok_vocab", lambda: bytes(tampered))
    with pytest.raises(TokenizerError, match="not the official o200k_base sha256 .*refusing"):
        offline_tokenizer_dir(tmp_path)
    assert not (tmp_path / "tokenizer" / f"gpt-oss-v{tk.BUILD_VERSION}").exists()


def test_corrupted_cache_is_detected(tmp_path):
    folder = tmp_path / "tokenizer" / f"gpt-oss-v{tk.BUILD_VERSION}"
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    (folder / TIKTOKEN_FILE).write_text("YQ== 0\n")
    (folder / "BUILD").write_text(tk.BUILD_VERSION)
    with pytest.raises(TokenizerError, match="does not match sha256 .* delete .* to rebuild"):
        offline_tokenizer_dir(tmp_path)


def test_truncated_vocabulary():
    with pytest.raises(TokenizerError, match="truncated"):
        parse_quicktok_vocab(b"\x05\x00\x00\x00\x02\x00ab")


def test_offline_fallback_for_gpt_oss_ids(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not tk.hub_reachable()
    assert load_tokenizer("openai/gpt-oss-20b") is load_offline_tokenizer()
    assert load_tokenizer(tk.OFFLINE_NAME) is load_offline_tokenizer()


def test_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerError) as info:
        load_tokenizer("someone/other-model")
    assert str(info.value) == ("tokenizer someone/other-model: not in the local cache and the hub "
                               "is unreachable (offline); give a local folder")
    with pytest.raises(TokenizerError, match="no such folder"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(TokenizerError, match="folder has no tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_local_folder(tokenizer_dir):
    tok = load_tokenizer(str(tokenizer_dir))
    assert tok.convert_tokens_to_ids("<|call|>") == 200012


def test_loading_needs_no_torch(tokenizer_dir):
    import subprocess
    import sys

    code = ("import sys; from osstune.engine.data.tokenizer import load_tokenizer; "
            "from osstune.engine.data.dataset import prepare_dataset; "
            "from osstune.engine.plan.config import load_config; "
            "cfg = load_config('tiny-cpu-demo'); tok = load_tokenizer(cfg.model.id); "
            "prepare_dataset(cfg, tok, use_cache=False); print('torch' in sys.modules)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
