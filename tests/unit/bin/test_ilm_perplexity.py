"""The perplexity tool loads the ASR model as decoding does, so a packed model works as input:
on the tiny CIF model trained on real audio (tests/tiny_audio_asr.py), the perplexities and
parameter counts from the packed file equal those from the training directory (the peer), and
ILME-Z's perplexity is that of the decoder with a zero context scored by hand."""
import math
import shutil

import pytest
import torch
from tiny_audio_asr import tiny_audio_cif_model, tiny_audio_lm

from espnet_ext.bin import ilm_perplexity
from espnet_ext.inference.pack import pack_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "audio_cif"
    model, lm = tiny_audio_cif_model(root), tiny_audio_lm(root)
    work = tmp_path_factory.mktemp("ppl")
    exp = work / "src" / "exp"
    exp.mkdir(parents=True)
    shutil.copy(model.exp / "config.yaml", exp / "config.yaml")
    shutil.copy(model.model_file, exp / "model.pth")
    packed = pack_model("exp/config.yaml", "exp/model.pth", work / "model.zip", root=work / "src")
    shutil.rmtree(work / "src")  # the packed file alone
    texts = [str(model.valid["text"]), str(model.train["text"])]
    ilms = ["--ilm", "ILME-Z=zero", "--ilm", f"DR=dr:{lm / 'valid.loss.ave.pth'}"]
    return dict(model=model, packed=packed, work=work, texts=texts, ilms=ilms)


def _run(setup, *model_args):
    args = [a for t in setup["texts"] for a in ("--text", t)]
    return ilm_perplexity.main(args + list(model_args) + setup["ilms"])


def test_packed_model_gives_the_perplexities_of_the_model_directory(setup):
    model = setup["model"]
    directory = _run(setup, "--token_list", str(model.token_list), "--asr_train_config",
                     str(model.exp / "config.yaml"), "--asr_model_file", str(model.model_file))
    out = setup["work"] / "out"
    packed = _run(setup, "--packed_model", str(setup["packed"]), "--unpack_dir",
                  str(setup["work"] / "unpacked"), "--output_dir", str(out))  # its own token list
    assert [r["name"] for r in packed] == ["ASR decoder (all)", "ILME-Z", "DR"]
    assert packed == directory
    assert all(set(r["ppl"]) == {"valid", "train"} for r in packed[1:])
    assert (out / "perplexity.md").exists() and (out / "perplexity.json").exists()


def test_ilme_z_perplexity_by_hand(setup):
    """exp(mean NLL) of every token and <eos> of the valid text under the decoder fed zeros."""
    from espnet2.tasks.asr import ASRTask

    model = setup["model"]
    asr, _ = ASRTask.build_model_from_file(str(model.exp / "config.yaml"), str(model.model_file), "cpu")
    asr.eval()
    ids = {t: i for i, t in enumerate(asr.token_list)}
    nll, count = 0.0, 0
    for line in model.valid["text"].read_text().splitlines():
        text = line.split(" ", 1)[1]
        y = [ids["<space>" if ch == " " else ch] for ch in text] + [asr.eos]
        inp = torch.tensor([[asr.sos] + y[:-1]])
        zeros = torch.zeros(1, len(y), asr.decoder.cif_dim)
        with torch.no_grad():
            logits = asr.decoder(zeros, torch.tensor([len(y)]), inp, torch.tensor([len(y)]))[0]
        logp = torch.log_softmax(logits[0], dim=-1)
        nll -= float(logp[torch.arange(len(y)), torch.tensor(y)].sum())
        count += len(y)
    rows = _run(setup, "--packed_model", str(setup["packed"]), "--unpack_dir", str(setup["work"] / "unpacked"))
    assert rows[1]["ppl"]["valid"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_model_arguments_are_checked(setup, tmp_path):
    with pytest.raises(ValueError, match="give either packed_model"):
        _run(setup, "--packed_model", str(setup["packed"]), "--asr_model_file", "x.pth")
    with pytest.raises(ValueError, match="--token_list is needed"):
        ilm_perplexity.main(["--text", setup["texts"][0], "--ilm", "DR=dr:x.pth"])
    other = tmp_path / "tokens.txt"
    tokens = setup["model"].token_list.read_text().split("\n")
    other.write_text("\n".join([tokens[1], tokens[0]] + tokens[2:]))
    with pytest.raises(ValueError, match="differs from the ASR model's"):
        _run(setup, "--packed_model", str(setup["packed"]), "--token_list", str(other))
