"""`pack_len: auto` only grows with the card: a larger card never gets shorter rows.

The rule compares lengths at the all-checkpointed floor (engine/plan/estimate.py pack_len_for), so
whole unchecked layers fitting the spare memory do not tip the choice back and forth between
nearby card sizes; the spare memory then goes to unchecked layers.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from osstune.engine.plan.config import load_config
from osstune.engine.plan.estimate import DatasetFacts, pack_len_for

PRESETS = ("gpt-oss-20b-lora-1gpu", "gpt-oss-20b-lora-mxfp4", "gpt-oss-120b-lora-mxfp4")
CONFIGS = {(p, seq, mb): load_config(p, ["training.pack_len=auto", f"training.sequence_len={seq}",
                                          f"training.micro_batch_size={mb}"])
           for p in PRESETS for seq in (1024, 2048, 4096) for mb in (1, 2)}


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(sorted(CONFIGS)), start=st.floats(16.0, 160.0),
       step=st.floats(0.25, 2.0), gpu=st.sampled_from(["NVIDIA H200", "NVIDIA H100 80GB HBM3",
                                                      "NVIDIA RTX A6000", None]),
       tokens=st.sampled_from([None, 2_000_000, 50_000_000]))
def test_a_larger_card_never_gets_shorter_rows(key, start, step, gpu, tokens) -> None:  # noqa: ANN001
    cfg = CONFIGS[key]
    facts = DatasetFacts(tokens_total=tokens) if tokens else None
    cards = [start + i * step for i in range(24)]
    lengths = [pack_len_for(cfg, card, gpu, facts).length for card in cards]
    assert lengths == sorted(lengths), (key, list(zip(cards, lengths, strict=True)))


def test_nearby_cards_step_up_only() -> None:
    # Half-GiB steps across the sizes where the old rule jumped (20b LoRA 50-75 GiB: 12,288 ->
    # 10,240 -> 8,192 -> 7,168 -> 8,192 as whole unchecked layers came and went)
    for preset in PRESETS:
        cfg = load_config(preset, ["training.pack_len=auto"])
        lengths = [pack_len_for(cfg, c / 2, "NVIDIA H200").length for c in range(36, 284)]
        assert lengths == sorted(lengths), preset
        assert lengths[-1] > lengths[0], preset  # and it does grow: the card matters
