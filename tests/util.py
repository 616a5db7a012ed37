"""Small builders shared by the tests."""

from mmfree_fpga.config import HGRNBitConfig


def tiny_config(**kw) -> HGRNBitConfig:
    base = dict(vocab_size=97, hidden_size=32, num_hidden_layers=3, intermediate_size=48)
    return HGRNBitConfig(**(base | kw))
