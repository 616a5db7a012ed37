"""Sampling, the generation loop and streaming decode, on a scripted backend."""

import numpy as np
import pytest

from mmfree_fpga.generate import GenerationStats, Sampler, TextStream, generate
from mmfree_fpga.tokenizer import load_tokenizer


class Scripted:
    """A backend whose logits favour token (last + 1) % V: easy to predict."""

    name = "scripted"

    def __init__(self, vocab=10):
        self.vocab, self.fed = vocab, []

    def reset(self):
        self.fed = []

    def step(self, token):
        self.fed.append(token)
        logits = np.zeros(self.vocab)
        logits[(token + 1) % self.vocab] = 5.0
        return logits


def test_greedy_generation_and_eos():
    b = Scripted()
    stats = GenerationStats()
    out = list(generate(b, [3, 4], 10, Sampler(), eos_id=8, stats=stats))
    assert out == [5, 6, 7, 8]
    assert stats.stopped_at_eos and stats.prompt_tokens == 2 and stats.new_tokens == 4
    assert b.fed == [3, 4, 5, 6, 7]          # EOS itself is never fed back


def test_max_new_tokens_and_reset():
    b = Scripted()
    assert list(generate(b, [0], 3, Sampler())) == [1, 2, 3]
    assert list(generate(b, [0], 3, Sampler())) == [1, 2, 3]  # state reset between runs
    with pytest.raises(ValueError):
        list(generate(b, [], 3, Sampler()))


def test_sampler_reproducible_and_filtered():
    logits = np.log(np.array([0.5, 0.3, 0.1, 0.05, 0.05]))
    a = [Sampler(1.0, seed=7)(logits) for _ in range(50)]
    s = Sampler(1.0, seed=7)
    assert a[0] == s(logits)
    s1, s2 = Sampler(1.0, seed=3), Sampler(1.0, seed=3)
    assert [s1(logits) for _ in range(50)] == [s2(logits) for _ in range(50)]
    top2 = Sampler(1.0, top_k=2, seed=0)
    assert {top2(logits) for _ in range(300)} == {0, 1}
    nucleus = Sampler(1.0, top_p=0.7, seed=0)    # 0.5 + 0.3 reaches 0.7
    assert {nucleus(logits) for _ in range(300)} == {0, 1}
    assert Sampler(0.0)(logits) == 0
    # at a low temperature sampling concentrates on the argmax
    cold = Sampler(0.05, seed=1)
    assert all(cold(logits) == 0 for _ in range(100))


def test_text_stream_holds_back_partial_utf8():
    from mmfree_fpga.cli import DEFAULT_MODEL
    tok = load_tokenizer(DEFAULT_MODEL)
    text = "naïve 東京 🚀 done"
    ids = tok.encode(text, add_special_tokens=False).ids
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
