"""Small builders shared by the tests."""

from mmfree_fpga.config import HGRNBitConfig


def tiny_config(**kw) -> HGRNBitConfig:
    base = dict(vocab_size=97, hidden_size=32, num_hidden_layers=3, intermediate_size=48)
    return HGRNBitConfig(**(base | kw))


def random_image(seed=0, **kw):
    """A random hgrn_bit of a tiny config, exported: gains and lower bounds off their init."""
    import torch

    from mmfree_fpga.export import export_model
    from mmfree_fpga.model import HGRNBitForCausalLM

    torch.manual_seed(seed)
    m = HGRNBitForCausalLM(tiny_config(**kw))
    with torch.no_grad():
        m.model.lower_bounds.normal_(0, 1)
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return export_model(m.eval(), b"{}")


async def send(ctx, port, beats, valid_prob, rng, log, start=0):
    """Offer ``beats`` on ``port`` with random gaps (none at ``valid_prob`` = 1, which
    needs no ``rng``); log the edge number of each transfer."""
    edge = 0
    for _ in range(start):
        await ctx.tick()
        edge += 1
    for beat in beats:
        while valid_prob < 1 and rng.random() >= valid_prob:
            ctx.set(port.valid, 0)
            await ctx.tick()
            edge += 1
        ctx.set(port.valid, 1)
        ctx.set(port.payload, beat)
        while True:
            *_, ready = await ctx.tick().sample(port.ready)
            edge += 1
            if ready:
                log.append(edge)
                break
    ctx.set(port.valid, 0)
