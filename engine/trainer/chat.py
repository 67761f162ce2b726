"""`python -m osstune.engine.trainer.chat RUN_DIR [--prompt TEXT] ...`: talk to a trained run.

Loads OUTPUT/export (or merged/, or the base model + adapter/), renders each turn with the
training renderer (engine/data/harmony_chat.py: reasoning effort, developer message), generates
token by token (greedy, or temperature / top-p sampling) and streams the analysis and final
channels separately on stdout as `[analysis] ...` and `[final] ...` lines. Without --prompt it
reads one user message per line from stdin until end of input (`/reset` clears the history,
`/exit` ends). Bad input: one `osstune: error: ...` line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

import torch

from osstune.engine.data.chat import Chat, ChatMessage
from osstune.engine.data.harmony import RenderSettings
from osstune.engine.data.harmony_chat import Delta, HarmonyStream, render_prompt
from osstune.engine.data.tokenizer import TokenizerError, load_tokenizer
from osstune.engine.plan.config import ConfigError, RunConfig, load_config
from osstune.engine.session.chat_target import ChatTarget, ChatTargetError, find_chat_target
from osstune.engine.session.events import EXIT_USER_ERROR
from osstune.engine.trainer.model import ModelError, torch_dtype
from osstune.engine.trainer.objective import causal_lm

DIM, RESET = "\033[2m", "\033[0m"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m osstune.engine.trainer.chat",
                                description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--prompt", help="one user message: answer it and exit")
    p.add_argument("--developer", help="developer instructions (harmony developer message)")
    p.add_argument("--reasoning-effort", choices=("low", "medium", "high"),
                   help="default: the run's dataset.reasoning_effort")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda:N")
    args = p.parse_args(argv)
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.max_new_tokens < 1:
        p.error("--temperature must be >= 0, --top-p in (0, 1], --max-new-tokens >= 1")
    return args


def load_model(target: ChatTarget, cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """The export / merged folder as it is served, or the run's base model with its adapter."""
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"attn_implementation": "eager"})})  # a KV cache path on every device
    if target.kind == "adapter":
        from osstune.engine.trainer.lora import load_adapter
        from osstune.engine.trainer.merge import base_model

        return load_adapter(base_model(cfg), target.path).model.to(device)
    from transformers import AutoModelForCausalLM

    if cfg.model.trust_remote_code:
        print("[chat] warning: model.trust_remote_code is on: code shipped with the model runs "
              "in this process", file=sys.stderr, flush=True)
    return AutoModelForCausalLM.from_pretrained(
        str(target.path), dtype=torch_dtype(cfg.model.dtype), attn_implementation="eager",
        trust_remote_code=cfg.model.trust_remote_code).to(device)


def pick_token(logits: torch.Tensor, temperature: float, top_p: float,
               generator: torch.Generator) -> int:
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def cache_keyword(lm: torch.nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); take what this version has."""
    params = inspect.signature(type(lm).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: list[int], stream: HarmonyStream,
             args: argparse.Namespace, on_delta: Callable[[Delta], None],
             generator: torch.Generator) -> None:
    lm = causal_lm(model)  # a PeftModel's base: its layers carry the adapter
    device = next(lm.parameters()).device
    keyword = cache_keyword(lm)
    ids = torch.tensor([prompt], device=device)
    cache = None
    for _ in range(args.max_new_tokens):
        out = lm(input_ids=ids, use_cache=True, **{keyword: cache})
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        token = pick_token(out.logits[0, -1], args.temperature, args.top_p, generator)
        for delta in stream.feed(token):
            on_delta(delta)
        if stream.done:
            return
        ids = torch.tensor([[token]], device=device)
    for delta in stream.finish():
        on_delta(delta)


def printer(out: TextIO, colour: bool) -> Callable[[Delta], None]:
    def show(delta: Delta) -> None:
        dim = colour and delta.channel != "final"
        if delta.start:
            to = f" to={delta.recipient}" if delta.recipient else ""
            out.write(f"{DIM if dim else ''}[{delta.channel}{to}] ")
        elif delta.end:
            out.write(f"{RESET if dim else ''}\n")
        else:
            out.write(delta.text)
        out.flush()
    return show


class Session:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, settings: RenderSettings,
                 developer: str | None, args: argparse.Namespace) -> None:
        self.model, self.tokenizer, self.settings, self.args = model, tokenizer, settings, args
        self.lead = [ChatMessage("developer", developer, index=0)] if developer else []
        self.history: list[ChatMessage] = []
        self.generator = torch.Generator().manual_seed(args.seed)
        self.show = printer(sys.stdout, sys.stdout.isatty() and not os.environ.get("NO_COLOR"))

    def turn(self, text: str) -> str:
        messages = [*self.lead, *self.history, ChatMessage("user", text)]
        for i, m in enumerate(messages):
            m.index = i
        prompt = render_prompt(self.tokenizer, Chat(messages), self.settings)
        stream = HarmonyStream(self.tokenizer)
        generate(self.model, prompt, stream, self.args, self.show, self.generator)
        self.history += [ChatMessage("user", text), ChatMessage("assistant", stream.final_text)]
        return stream.final_text

    def loop(self, lines: TextIO) -> None:
        interactive = lines.isatty()
        while True:
            if interactive:
                sys.stdout.write("you> ")
                sys.stdout.flush()
            line = lines.readline()
            if not line:
                return
            text = line.rstrip("\n")
            if text.strip() in ("/exit", "/quit"):
                return
            if text.strip() == "/reset":
                self.history = []
                continue
            if text.strip():
                self.turn(text)


def run(args: argparse.Namespace) -> int:
    target = find_chat_target(args.run_dir)
    cfg = load_config(str(target.config))
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    tokenizer_source = str(target.path) if (target.path / "tokenizer.json").is_file() else (
        cfg.model.tokenizer or cfg.model.id)
    tokenizer = load_tokenizer(tokenizer_source)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is the user's terminal: one [chat] line, no bars
    model = load_model(target, cfg, device).eval()
    settings = replace(RenderSettings.from_dataset_config(cfg.dataset),
                       reasoning_effort=args.reasoning_effort or cfg.dataset.reasoning_effort)
    print(f"[chat] {target.path} on {device}; reasoning effort {settings.reasoning_effort}; "
          f"{'greedy' if args.temperature == 0 else f'temperature {args.temperature:g}'}"
          + ("" if args.prompt is not None else "; one message per line, end with Ctrl-D"),
          file=sys.stderr, flush=True)
    session = Session(model, tokenizer, settings, args.developer, args)
    if args.prompt is not None:
        session.turn(args.prompt)
    else:
        session.loop(sys.stdin)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ChatTargetError, ConfigError, ModelError, TokenizerError) as e:
        print(f"osstune: error: {e}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
