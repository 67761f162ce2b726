"""One line for a model file that cannot be read, whichever loader met it (the plain
`from_pretrained` path, the FSDP sharded loader, the MXFP4-packed loader).

A download cut short or a copy interrupted leaves a safetensors file shorter than its header
says; the library's own message ("incomplete metadata, file not fully covered") names neither
the file nor what is missing. Only the JSON header is read here: nothing in the file runs.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_HEADER = 100 << 20  # safetensors refuses headers over 100 MB: so do we


def truncated_tensor(path: Path) -> str | None:
    """The first tensor (by offset) whose bytes a cut-off safetensors file lacks, if the header
    still reads; None for a whole file or an unreadable header."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > MAX_HEADER:
                return None
            header = json.loads(f.read(size))
        data_bytes = path.stat().st_size - 8 - size
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    ends = sorted((info["data_offsets"][1], name) for name, info in header.items()
                  if isinstance(info, dict) and isinstance(info.get("data_offsets"), list)
                  and len(info["data_offsets"]) == 2 and isinstance(info["data_offsets"][1], int))
    return next((name for end, name in ends if end > data_bytes), None)


def unreadable_line(model_id: str, path: Path, error: BaseException,
                    cut: str | None = None) -> str:
    """'model M: FILE: tensor T runs past the end of the file (truncated safetensors)', or the
    library's reason with the file named. `cut`: the cut-off tensor, when already found."""
    cut = cut or truncated_tensor(path)
    if cut is not None:
        return (f"model {model_id}: {path.name}: tensor {cut} runs past the end of the file "
                "(truncated safetensors: download or copy it again)")
    return f"model {model_id}: {path.name}: cannot read safetensors ({error})"


def first_unreadable(model_id: str, folder: Path, error: BaseException) -> str | None:
    """After a load failed with `error`: the line for the first cut-off file in `folder`, if
    one is; None when every file is whole (the failure lies elsewhere)."""
    for path in sorted(folder.glob("*.safetensors")):
        if (cut := truncated_tensor(path)) is not None:
            return unreadable_line(model_id, path, error, cut)
    return None
