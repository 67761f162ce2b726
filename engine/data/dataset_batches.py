"""The per-batch work of the data pipeline: rows -> validated chats -> masked harmony examples.

`PipelineSettings` holds everything that changes the prepared examples (and so the cache key);
`process_rows` validates, renders and length-checks one batch; `run_batches` feeds the batches
through one renderer, or through worker processes for big datasets, with a progress bar on a
terminal. `dataset.py` assembles the results into examples and statistics. No torch import here.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from osstune.engine.data.chat import Chat, RowError
from osstune.engine.data.dataset_formats import (
    NO_TRAINED_TOKENS,
    NOT_JSON,
    TOO_LONG,
    WRONG_CONTENT_TYPE,
    FormatOptions,
    row_to_chat,
)
from osstune.engine.data.dataset_sources import BadRow
from osstune.engine.data.harmony import Example, HarmonyRenderer, RenderSettings

BATCH_ROWS = 256
PARALLEL_MIN_ROWS = 4096  # below this, process start-up costs more than it saves

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PipelineSettings:
    """Everything that changes the prepared examples (and therefore the cache key)."""

    format_options: FormatOptions
    render: RenderSettings
    sequence_len: int
    overlength: str = "drop"  # drop | truncate
    invalid_rows: str = "skip"  # skip | fail
    max_rows: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> PipelineSettings:
        ds = cfg.dataset
        return cls(
            format_options=FormatOptions.from_dataset_config(ds),
            render=RenderSettings.from_dataset_config(ds),
            sequence_len=cfg.training.sequence_len,
            overlength=ds.overlength,
            invalid_rows=ds.invalid_rows,
            max_rows=ds.max_rows,
        )

    def key(self) -> str:
        return json.dumps([self.format_options.key(), repr(self.render), self.sequence_len,
                           self.overlength, self.max_rows])


# --------------------------------------------------------------------------- per-batch work


@dataclass
class BatchResult:
    examples: list[Example]
    skipped: list[tuple[int, str, str]]  # (row, reason, detail)
    truncated: int = 0
    empty_answer: int = 0


def _read_chat(data: dict[str, Any], fmt: str, settings: PipelineSettings) -> Chat:
    try:
        return row_to_chat(data, fmt, settings.format_options)
    except RecursionError:  # a value nested thousands deep (json.dumps / our walkers recurse)
        raise RowError(WRONG_CONTENT_TYPE, "nested too deeply") from None


def has_empty_answer(chat: Chat) -> bool:
    """An assistant message with reasoning, no tool call and no answer text."""
    return any(m.role == "assistant" and m.thinking and not m.content and not m.tool_calls
               for m in chat.messages)


def _truncate(ex: Example, limit: int) -> Example:
    return Example(ex.row, ex.input_ids[:limit], ex.labels[:limit], ex.message_index[:limit],
                   ex.role[:limit], ex.turn)


def process_rows(rows: Sequence[tuple[int, dict[str, Any] | BadRow]], fmt: str,
                 settings: PipelineSettings, renderer: HarmonyRenderer) -> BatchResult:
    """Validate, render and length-check one batch of (row number, row)."""
    result = BatchResult([], [])
    chats: list[tuple[int, Chat]] = []
    for row, data in rows:
        if isinstance(data, BadRow):
            result.skipped.append((row, NOT_JSON, data.error))
            continue
        try:
            chat = _read_chat(data, fmt, settings)
        except RowError as e:
            result.skipped.append((row, e.reason, e.detail))
            continue
        chats.append((row, chat))
    limit = settings.sequence_len
    for (row, chat), rendered in zip(chats, renderer.render_batch(chats), strict=False):
        if isinstance(rendered, RowError):
            result.skipped.append((row, rendered.reason, rendered.detail))
            continue
        result.empty_answer += has_empty_answer(chat)
        for ex in rendered:
            truncated = len(ex) > limit
            if truncated:
                if settings.overlength == "drop":
                    result.skipped.append((row, TOO_LONG, f"{len(ex)} tokens, longer than "
                                                          f"sequence_len {limit}"))
                    continue
                ex = _truncate(ex, limit)
                result.truncated += 1
            if ex.trained_tokens == 0:
                result.skipped.append((row, NO_TRAINED_TOKENS, "no trained tokens"
                                       + (" left after truncation" if truncated else "")))
                continue
            result.examples.append(ex)
    return result


_WORKER: dict[str, Any] = {}


def _worker_init(tokenizer: Any, fmt: str, settings: PipelineSettings) -> None:
    _WORKER["renderer"] = HarmonyRenderer(tokenizer, settings.render)
    _WORKER["fmt"] = fmt
    _WORKER["settings"] = settings


def _worker_batch(rows: list[tuple[int, dict[str, Any] | BadRow]]) -> BatchResult:
    return process_rows(rows, _WORKER["fmt"], _WORKER["settings"], _WORKER["renderer"])


def _batches(rows: Sequence[dict[str, Any] | BadRow], size: int) -> Iterable[list[tuple[int, Any]]]:
    """(row number, row) batches; row numbers are 1-based, like line numbers."""
    for start in range(0, len(rows), size):
        yield [(start + i, r) for i, r in enumerate(rows[start:start + size], 1)]


def _progress(total: int, description: str) -> Any:
    """A rich progress bar on a terminal; nothing otherwise (CI logs, the wizard's worker).

    Only from the main thread: the wizard prepares previews in a worker thread while Textual owns
    the terminal, and a bar drawn there would corrupt its screen.
    """
    if (total < 2 * BATCH_ROWS or not sys.stderr.isatty()
            or threading.current_thread() is not threading.main_thread()):
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=True)
    progress.start()
    progress.add_task(description, total=total)
    return progress


def default_num_proc() -> int:
    """Processes for preprocessing when `dataset.num_proc` is unset.

    One process already keeps every core busy during tokenization (the Rust tokenizer is
    multithreaded); extra processes pay off only on machines with many cores, where the Python
    part (validation, rendering, masks) becomes the bottleneck. Measured on 2 cores: one process
    12.6 s, two processes 16.2 s for 12,000 conversations.
    """
    cores = os.cpu_count() or 1
    return 1 if cores < 8 else min(cores // 2, 8)


def run_batches(rows: Sequence[dict[str, Any] | BadRow], fmt: str, settings: PipelineSettings,
                 tokenizer: Any, num_proc: int | None,
                 on_batch: Callable[[BatchResult], None]) -> None:
    procs = num_proc or default_num_proc()
    progress = _progress(len(rows), "preparing dataset")

    def advance(n: int) -> None:
        if progress is not None:
            progress.advance(progress.task_ids[0], n)

    try:
        if procs > 1 and len(rows) >= PARALLEL_MIN_ROWS:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
            # Workers split the rows; threads inside each would only contend (and the Rust
            # tokenizer warns after a fork when they are on).
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            with ProcessPoolExecutor(procs, mp_context=ctx, initializer=_worker_init,
                                     initargs=(tokenizer, fmt, settings)) as pool:
                for batch, result in zip(_batches(rows, BATCH_ROWS),
                                         pool.map(_worker_batch, _batches(rows, BATCH_ROWS)),
                                         strict=True):
                    on_batch(result)
                    advance(len(batch))
        else:
            renderer = HarmonyRenderer(tokenizer, settings.render)
            for batch in _batches(rows, BATCH_ROWS):
                on_batch(process_rows(batch, fmt, settings, renderer))
                advance(len(batch))
    finally:
        if progress is not None:
            progress.stop()
