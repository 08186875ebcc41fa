"""sclite scoring of a decoding, ESPnet style.

``ref.trn``/``hyp.trn`` lines are ``tok tok ...<TAB>(spk-utt)`` (sclite takes the speaker from
the text before the first ``-``). Units: ``char`` (CER; a space is the token ``<space>`` as in
ESPnet's score_cer), ``word`` (WER), ``bpe`` (TER with a sentencepiece model). The real Debian
``sclite`` then writes ``result.txt`` (``-i rm -o all stdout``) and ``result.dtl`` (``-o dtl``).

sclite segfaults on an empty hypothesis file and silently leaves out utterances missing from it,
so both are refused here with a message naming the file and the missing utterances.

Every output is written under a temporary name and renamed; ``result.txt`` comes last, so its
presence means the scoring is complete (an interrupted run leaves no result.txt).
"""
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_ext.utils.kaldi_table import read_table_dict

SCTK_BIN = "/usr/lib/sctk/bin"
SUM_FIELDS = ("snt", "wrd", "corr", "sub", "del", "ins", "err", "serr")


class ScoringError(Exception):
    """The decoding cannot be scored (empty or incomplete hypotheses, sclite failure)."""


def find_sclite() -> str:
    path = shutil.which("sclite") or (os.path.join(SCTK_BIN, "sclite")
                                      if os.access(os.path.join(SCTK_BIN, "sclite"), os.X_OK)
                                      else None)
    if path is None:
        raise ScoringError("sclite not found: install Debian's sctk and put /usr/lib/sctk/bin "
                           "on PATH (path.sh does)")
    return path


def tokenize(text: str, token_type: str, bpe=None) -> List[str]:
    if token_type == "word":
        return text.split()
    if token_type == "char":
        return ["<space>" if c == " " else c for c in re.sub(r"\s+", " ", text.strip())]
    if token_type == "bpe":
        return bpe.encode(text, out_type=str)
    raise ValueError(f"unknown token_type {token_type!r} (char, word, bpe)")


def check_complete(ref: Dict[str, str], hyp: Dict[str, str], hyp_path) -> None:
    if not hyp:
        raise ScoringError(f"hypothesis file {hyp_path} is empty: nothing was decoded "
                           f"(sclite would crash); refusing to score")
    missing = sorted(set(ref) - set(hyp))
    extra = sorted(set(hyp) - set(ref))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ScoringError(f"hypothesis file {hyp_path} lacks {len(missing)} of {len(ref)} "
                           f"reference utterances ({shown}); decoding is incomplete and sclite "
                           f"would silently leave them out; refusing to score")
    if extra:
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise ScoringError(f"hypothesis file {hyp_path} has {len(extra)} utterances not in the "
                           f"reference ({shown}); refusing to score")


def write_trn(texts: Dict[str, str], utt2spk: Dict[str, str], path, token_type: str,
              bpe=None) -> None:
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for utt in sorted(texts):
            toks = tokenize(texts[utt], token_type, bpe)
            f.write(" ".join(toks) + f"\t({utt2spk.get(utt, utt)}-{utt})\n")
    tmp.replace(path)


def parse_result(path) -> Dict[str, float]:
    """The ``Sum/Avg`` row (percentages; Snt/Wrd counts) of an sclite ``result.txt``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "Sum/Avg" in line:
                nums = re.findall(r"-?\d+(?:\.\d+)?", line.split("Sum/Avg", 1)[1])
                if len(nums) >= 8:
                    return dict(zip(SUM_FIELDS, (float(x) for x in nums[:8])))
    raise ScoringError(f"{path}: no 'Sum/Avg' line; not an sclite result")


def score(ref_text, hyp_text, utt2spk_file, token_type: str, output_dir,
          bpemodel: Optional[str] = None) -> Dict[str, float]:
    """Write ref.trn, hyp.trn, result.txt and result.dtl in ``output_dir``; return Sum/Avg.
    Malformed input tables raise :class:`~espnet_ext.utils.kaldi_table.TableError`. Earlier
    results in ``output_dir`` are removed first: a refused scoring leaves none behind."""
    out = Path(output_dir)
    for name in ("result.txt", "result.dtl", "ref.trn", "hyp.trn"):
        (out / name).unlink(missing_ok=True)
    if not Path(hyp_text).is_file():
        raise ScoringError(f"hypothesis file {hyp_text} does not exist (decode first)")
    ref = read_table_dict(ref_text)
    hyp = read_table_dict(hyp_text)
    if not ref:
        raise ScoringError(f"reference {ref_text} is empty")
    check_complete(ref, hyp, hyp_text)
    utt2spk = read_table_dict(utt2spk_file) if utt2spk_file else {}
    bpe = None
    if token_type == "bpe":
        import sentencepiece as spm

        bpe = spm.SentencePieceProcessor(model_file=str(bpemodel))
    out.mkdir(parents=True, exist_ok=True)
    write_trn(ref, utt2spk, out / "ref.trn", token_type, bpe)
    write_trn(hyp, utt2spk, out / "hyp.trn", token_type, bpe)
    sclite = find_sclite()
    base = [sclite, "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm"]
    # Run inside output_dir: sclite writes file names into its reports.
    tmp = out / "result.txt.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        res = subprocess.run(base + ["-o", "all", "stdout"], cwd=out, stdout=f,
                             stderr=subprocess.PIPE)
    if res.returncode != 0:
        raise ScoringError(f"sclite failed (code {res.returncode}) in {out}: "
                           f"{res.stderr.decode(errors='replace').strip()}")
    res = subprocess.run(base + ["-o", "dtl", "-O", ".", "-n", "result.tmp"], cwd=out,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if res.returncode != 0:
        raise ScoringError(f"sclite -o dtl failed (code {res.returncode}) in {out}: "
                           f"{res.stderr.decode(errors='replace').strip()}")
    (out / "result.tmp.dtl").replace(out / "result.dtl")
    tmp.replace(out / "result.txt")  # last: marks the scoring complete
    return parse_result(out / "result.txt")


def score_types_to_units(score_types: Sequence[str]) -> List[Tuple[str, str]]:
    units = {"cer": "char", "wer": "word", "ter": "bpe"}
    bad = [t for t in score_types if t not in units]
    if bad:
        raise ValueError(f"unknown score types {bad} (cer, wer, ter)")
    return [(t, units[t]) for t in score_types]
