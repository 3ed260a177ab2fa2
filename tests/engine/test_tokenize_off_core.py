"""Tokenization runs off the engine's core thread (issue 17, item 1).

A text that takes long to tokenize (a million characters with no whitespace: the text cut
cannot prove a prefix, so it is read whole) must not hold up other prompts: a token-id
prompt submitted right after it is computed and answered while the text is still being
tokenized. Before, the core thread tokenized the text first, and both came out of the same
batch. Order only, no timing threshold.
"""

from __future__ import annotations

import asyncio

from poolstream.pooling_params import PoolingParams


async def test_a_slow_text_does_not_hold_up_other_prompts(make_engine):
    engine = await make_engine()
    slow = ("ab," * 400_000)[:1_000_000]
    text = asyncio.ensure_future(engine.encode_one(slow, PoolingParams(), "slow-text"))
    await asyncio.sleep(0)  # admitted first
    ids = asyncio.ensure_future(engine.encode_one({"prompt_token_ids": [101, 7592, 102]}, PoolingParams(), "ids"))
    done, _ = await asyncio.wait({text, ids}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {ids}, "the token-id prompt waited for the text's tokenization"
    assert not text.done()
    out = await text
    assert len(out.prompt_token_ids) == 256 and out.truncated


async def test_text_cut_matches_the_whole_text_through_the_engine(make_engine):
    """Prose far over the bound: the engine's ids (from the cut prefix) are the whole text's."""
    engine = await make_engine()
    prose = "the quick brown fox jumps over the lazy dog " * 20_000
    out = await engine.encode_one(prose, PoolingParams(), "prose")
    tok = engine._processor.tokenizer
    tok.enable_truncation(256)
    try:
        assert out.prompt_token_ids == tok.encode(prose).ids
    finally:
        tok.no_truncation()
