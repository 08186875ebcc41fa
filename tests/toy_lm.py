"""Toy-sized LM pieces shared by the LM tests: a 9-token vocabulary and real ESPnet decoders
(LAS, transformer) and our CIF decoder with tiny dimensions."""
import torch

V, D = 9, 16  # toy vocabulary (<blank> <unk> 6 letters <sos/eos>) and context size
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "<sos/eos>"]
SOS = EOS = V - 1


def prefixes(n=3, length=5, seed=0):
    """``n`` random label prefixes of ``length`` starting with <sos>."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(1, V - 1, (n, length), generator=g)
    ys[:, 0] = SOS
    return ys


def tiny_decoders():
    """{"rnn", "transformer", "cif"}: seeded toy decoders in eval mode."""
    from espnet2.asr.decoder.rnn_decoder import RNNDecoder
    from espnet2.asr.decoder.transformer_decoder import TransformerDecoder

    from espnet_ext.asr.decoder.cif_decoder import CIFDecoder

    torch.manual_seed(0)
    rnn = RNNDecoder(V, D, num_layers=2, hidden_size=12, context_residual=True).eval()
    tr = TransformerDecoder(V, D, attention_heads=2, linear_units=20, num_blocks=2).eval()
    cif = CIFDecoder(V, D, attention_heads=2, linear_units=20, num_blocks=2).eval()
    return dict(rnn=rnn, transformer=tr, cif=cif)
