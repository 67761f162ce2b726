"""The GPT-OSS tokenizer: from a model id or folder through transformers, or rebuilt offline.

The offline builder turns the o200k vocabulary bundled with the `quicktok-v1` package into the
official `o200k_base.tiktoken` file (refused unless its sha256 matches the published one), then
into a transformers fast tokenizer with the harmony special tokens. The result is cached on disk,
so only the first call pays for the conversion. It is used when the hub cannot be reached or
`HF_HUB_OFFLINE=1` is set. No torch import here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import shutil
import socket
import struct
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

DEFAULT_TOKENIZER = "openai/gpt-oss-20b"
OFFLINE_NAME = "builtin:gpt-oss-offline"
TIKTOKEN_FILE = "o200k_base.tiktoken"
TIKTOKEN_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_SIZE = 201088
# Bumped when the build recipe changes, so stale caches are rebuilt rather than trusted.
BUILD_VERSION = "1"

O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Named harmony specials; every other id in 199998..201087 is `<|reserved_ID|>`.
NAMED_SPECIALS = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
    200018: "<|endofprompt|>",
}
FIRST_SPECIAL_ID = 199998


class TokenizerError(RuntimeError):
    """The tokenizer cannot be loaded or built; the message says which and why."""


def special_tokens() -> dict[int, str]:
    return {
        i: NAMED_SPECIALS.get(i, f"<|reserved_{i}|>") for i in range(FIRST_SPECIAL_ID, VOCAB_SIZE)
    }


def cache_root() -> Path:
    """`OSSTUNE_CACHE_DIR` if set, else the user cache dir (e.g. ~/.cache/osstune)."""
    env = os.environ.get("OSSTUNE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("osstune"))


def _quicktok_vocab() -> bytes:
    try:
        ref = resources.files("quicktok") / "data" / "o200k.vocab"
        return ref.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as e:
        raise TokenizerError(
            f"offline tokenizer: cannot read quicktok/data/o200k.vocab ({e}); "
            "install the quicktok-v1 package"
        ) from None


def parse_quicktok_vocab(data: bytes) -> list[tuple[int, bytes]]:
    """`u32 N` then N x (`u16 len`, `len` bytes, `u32 rank`), little-endian -> [(rank, bytes)]."""
    try:
        (count,) = struct.unpack_from("<I", data, 0)
        offset = 4
        items: list[tuple[int, bytes]] = []
        for _ in range(count):
            (length,) = struct.unpack_from("<H", data, offset)
            offset += 2
            token = data[offset : offset + length]
            offset += length
            (rank,) = struct.unpack_from("<I", data, offset)
            offset += 4
            items.append((rank, token))
    except struct.error:
        raise TokenizerError("offline tokenizer: quicktok o200k.vocab is truncated") from None
    if offset != len(data):
        raise TokenizerError("offline tokenizer: quicktok o200k.vocab has trailing bytes")
    items.sort()
    return items


def tiktoken_text(items: list[tuple[int, bytes]]) -> bytes:
    return "".join(
        f"{base64.b64encode(token).decode('ascii')} {rank}\n" for rank, token in items
    ).encode("ascii")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    return _sha256(path.read_bytes())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=False))


def _hf_tokenizer_json(items: list[tuple[int, bytes]]) -> str:
    """A byte-level BPE `tokenizers` model equivalent to tiktoken's o200k + harmony specials."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    byte_map = _bytes_to_unicode()

    def as_str(token: bytes) -> str:
        return "".join(byte_map[b] for b in token)

    ranks = {token: rank for rank, token in items}
    vocab = {as_str(token): rank for rank, token in items}
    # Every way a token splits into two tokens, ordered as tiktoken would merge them; with
    # ignore_merges the whole-word lookup wins anyway, so only the rank order matters.
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for rank, token in items:
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    merge_strs = [(as_str(m[3]), as_str(m[4])) for m in merges]

    tok = Tokenizer(BPE(vocab, merge_strs, fuse_unk=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(
        [AddedToken(text, normalized=False, special=True)
         for _, text in sorted(special_tokens().items())]
    )
    return tok.to_str()


def _tokenizer_config() -> dict[str, object]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
    }


def _is_complete(folder: Path) -> bool:
    marker = folder / "BUILD"
    return marker.is_file() and marker.read_text().strip() == BUILD_VERSION and all(
        (folder / name).is_file()
        for name in (TIKTOKEN_FILE, "tokenizer.json", "tokenizer_config.json")
    )


def offline_tokenizer_dir(cache_dir: Path | None = None) -> Path:
    """Build (once) and return the folder holding the verified offline tokenizer.

    The folder has `o200k_base.tiktoken` (also what openai-harmony reads through
    TIKTOKEN_ENCODINGS_BASE), `tokenizer.json` and `tokenizer_config.json`.
    """
    folder = (cache_dir or cache_root()) / "tokenizer" / f"gpt-oss-v{BUILD_VERSION}"
    if _is_complete(folder):
        if _file_sha256(folder / TIKTOKEN_FILE) != TIKTOKEN_SHA256:
            raise TokenizerError(
                f"offline tokenizer: {folder / TIKTOKEN_FILE} does not match sha256 "
                f"{TIKTOKEN_SHA256}; delete {folder} to rebuild it"
            )
        return folder

    items = parse_quicktok_vocab(_quicktok_vocab())
    text = tiktoken_text(items)
    digest = _sha256(text)
    if digest != TIKTOKEN_SHA256:
        raise TokenizerError(
            f"offline tokenizer: the vocabulary in quicktok-v1 hashes to {digest}, "
            f"not the official o200k_base sha256 {TIKTOKEN_SHA256}; refusing to use it"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a crash or a concurrent build never leaves a
    # half-written folder that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        (staging / TIKTOKEN_FILE).write_bytes(text)
        (staging / "tokenizer.json").write_text(_hf_tokenizer_json(items), encoding="utf-8")
        config = _tokenizer_config()
        (staging / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2), encoding="utf-8"
        )
        specials = {k: config[k] for k in ("bos_token", "eos_token", "pad_token")}
        (staging / "special_tokens_map.json").write_text(
            json.dumps(specials, indent=2), encoding="utf-8"
        )
        (staging / "BUILD").write_text(BUILD_VERSION)
        try:
            staging.rename(folder)
        except OSError:
            if not _is_complete(folder):  # lost a race to nobody: a real failure
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout_s: float = 1.5) -> bool:
    """A quick TCP connect to the hub endpoint; never waits on long network timeouts."""
    if hub_offline():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def is_gpt_oss(name: str) -> bool:
    return "gpt-oss" in name.lower() or "gpt_oss" in name.lower()


@functools.lru_cache(maxsize=4)
def _load_dir(folder: str) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder)


def _hub_cache_dir(name: str) -> Path | None:
    """The snapshot folder of a hub tokenizer already in the local cache (no network, no torch)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "tokenizer.json")
    except Exception:  # an id that is not a valid repo name, a broken cache
        return None
    return Path(found).parent if isinstance(found, str) else None


def _load_from_hub(name: str) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(name)
    except Exception:
        # Repos without tokenizer.json need the Auto machinery (which imports torch).
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)


def load_offline_tokenizer() -> PreTrainedTokenizerFast:
    return _load_dir(str(offline_tokenizer_dir()))


def load_tokenizer(name_or_path: str | None = None) -> PreTrainedTokenizerFast:
    """A local folder, a hub id, or `builtin:gpt-oss-offline`; GPT-OSS ids fall back offline.

    Raises TokenizerError with one line naming the input when nothing usable is found.
    """
    name = name_or_path or DEFAULT_TOKENIZER
    if name == OFFLINE_NAME:
        return load_offline_tokenizer()
    path = Path(name).expanduser()
    if path.is_dir():
        if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
            raise TokenizerError(f"tokenizer {name}: folder has no tokenizer.json")
        try:
            return _load_dir(str(path.resolve()))
        except Exception as e:  # transformers raises many kinds; the user needs one line
            raise TokenizerError(f"tokenizer {name}: cannot load: {e}") from None
    if name.startswith((".", "/", "~")) or path.suffix in {".json", ".model"}:
        raise TokenizerError(f"tokenizer {name}: no such folder")

    # The hub's copy first when cached; a network fetch only when the hub answers quickly.
    cached = _hub_cache_dir(name)
    if cached is not None:
        try:
            return _load_dir(str(cached))
        except Exception:
            pass
    if hub_reachable():
        try:
            return _load_from_hub(name)
        except Exception as e:
            if not is_gpt_oss(name):
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise TokenizerError(
                    f"tokenizer {name}: cannot load from the hub: {first}") from None
    if is_gpt_oss(name):
        return load_offline_tokenizer()
    raise TokenizerError(
        f"tokenizer {name}: not in the local cache and the hub is unreachable "
        "(offline); give a local folder"
    )
