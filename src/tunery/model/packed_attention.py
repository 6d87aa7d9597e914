"""Does this model keep examples apart when they share a row? (what padding-free batches rely on)

A padding-free batch is one row: the examples one after another, ``position_ids`` restarting at 0 for each and no
``attention_mask``. Models built on transformers' masking utilities derive a block-diagonal causal mask from such
position_ids (sdpa, eager) or run flash-attention's variable-length kernel, so each example sees only itself.
Architectures that do not (remote code, older attention code) would let an example attend to the ones before it.
Rather than keep a list of architectures, :func:`keeps_examples_apart` asks the loaded model: the logits of a short
random example alone must equal its logits after another example in the same row, much more closely than when the
two are joined as one sequence (the leak the check must rule out). Three forward passes of at most 12 tokens.
"""

from __future__ import annotations


def _logits(model, input_ids, position_ids=None):
    out = model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    return out.logits.float()


def keeps_examples_apart(model, first_len: int = 7, second_len: int = 5) -> bool:
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    device = model.get_input_embeddings().weight.device
    gen = torch.Generator().manual_seed(0)
    first = torch.randint(vocab, (1, first_len), generator=gen)
    second = torch.randint(vocab, (1, second_len), generator=gen)
    row = torch.cat([first, second], dim=1).to(device)
    positions = torch.cat([torch.arange(first_len), torch.arange(second_len)]).unsqueeze(0).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = _logits(model, second.to(device))
            apart = _logits(model, row, positions)[:, first_len:]
            joined = _logits(model, row)[:, first_len:]
    finally:
        model.train(was_training)
    err_apart = (apart - alone).abs().max().item()
    err_joined = (joined - alone).abs().max().item()
    scale = alone.abs().max().item()
    if err_apart <= 1e-4 * max(scale, 1.0):  # equal up to float noise
        return True
    return err_apart < 0.05 * err_joined  # low-precision noise, far below what a leak does
