"""Extract frozen-PLM teacher features for HKD as kaldiio ark/scp (fp16), resumably.

    python -m espnet_ext.bin.extract_plm_feats --model <HF path> --text data/<set>/text \
        --token_list <tokens.txt> --token_type char|bpe|hugging_face --layer -1 \
        --batch_size 64 --output_dir dump/plm/<set>

For every utterance of ``--text`` the transcript is tokenised exactly as ESPnet's preprocessor
does (same token type, bpe model, cleaner, non-linguistic symbols), the PLM input is built and
verified by :class:`espnet_ext.distill.teacher.TokenAligner`, and the PLM output without [CLS]
((L + 1) x D: L token rows, then [SEP] for the EOS position) is stored in fp16.

Utterances the PLM does not tokenise 1:1 are listed with their reason in ``<output_dir>/misaligned``
and counted in the log. ``--misaligned_policy skip`` (default) writes an empty (0 x D) matrix for
them, so the ESPnet data key still exists for every utterance and the distiller leaves them out of
distillation (counted as ``distill_skipped``) while they keep training the ASR losses;
``--misaligned_policy fail`` stops before any PLM work and names them.

Outputs in ``--output_dir``: ``feats.scp`` (written last), ``data/feats.<chunk>.{ark,scp}``,
``misaligned``, ``feats_shape`` (``utt rows,dim``), ``config.json``, ``log/extract_plm_feats.log``.
Work is split into chunks of ``--chunk_size`` utterances; a chunk is done once its scp has been
renamed from ``.tmp``, so a rerun after an interruption skips done chunks and redoes the rest.
"""
import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from espnet_ext.distill.teacher import TOKEN_TYPES, PLMTeacher
from espnet_ext.utils.kaldi_table import read_table_dict
from espnet_ext.utils.tokens import read_token_list

logger = logging.getLogger("extract_plm_feats")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face model name or local path (AutoModel)")
    p.add_argument("--text", required=True, help="Kaldi-style text file: <utt_id> <transcript>")
    p.add_argument("--token_list", required=True, help="ASR token list (tokens.txt)")
    p.add_argument("--token_type", required=True, choices=TOKEN_TYPES)
    p.add_argument("--bpemodel", default=None, help="sentencepiece model (bpe); defaults to --model for hugging_face")
    p.add_argument("--non_linguistic_symbols", default=None)
    p.add_argument("--cleaner", default=None)
    p.add_argument("--space_symbol", default="<space>")
    p.add_argument("--layer", type=int, default=-1, help="-1: last layer; i: hidden_states[i] (0 = embeddings)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--chunk_size", type=int, default=2000, help="utterances per resumable chunk")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--misaligned_policy", default="skip", choices=("skip", "fail"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--num_threads", type=int, default=None, help="torch CPU threads")
    return p


def file_digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def setup_logging(output_dir: Path) -> logging.Handler:
    (output_dir / "log").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "log" / "extract_plm_feats.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logger.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(stream)
    return handler


def asr_tokenizer(args):
    """The tokenizer ESPnet's CommonPreprocessor uses for the same options."""
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.cleaner import TextCleaner

    bpemodel = args.bpemodel or (args.model if args.token_type == "hugging_face" else None)
    tokenizer = build_tokenizer(
        token_type=args.token_type,
        bpemodel=bpemodel,
        non_linguistic_symbols=args.non_linguistic_symbols,
        space_symbol=args.space_symbol,
    )
    cleaner = TextCleaner(args.cleaner)
    return lambda text: tokenizer.text2tokens(cleaner(text))


def write_chunk(data_dir: Path, index: int, feats: Dict[str, np.ndarray]) -> None:
    """Write one chunk as ark + scp + shape via .tmp files; the scp rename marks it done."""
    import kaldiio

    ark, scp, shape = (data_dir / f"feats.{index}.{ext}" for ext in ("ark", "scp", "shape"))
    ark_tmp, scp_tmp, shape_tmp = (Path(f"{p}.tmp") for p in (ark, scp, shape))
    kaldiio.save_ark(str(ark_tmp), feats, scp=str(scp_tmp), write_function="numpy")
    with open(scp_tmp, encoding="utf-8") as f:
        lines = [line.replace(f" {ark_tmp}:", f" {ark}:", 1) for line in f]
    with open(scp_tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    with open(shape_tmp, "w", encoding="utf-8") as f:
        f.writelines(f"{u} {a.shape[0]},{a.shape[1]}\n" for u, a in feats.items())
    os.replace(ark_tmp, ark)
    os.replace(shape_tmp, shape)
    os.replace(scp_tmp, scp)


def main(cmd: Optional[Sequence[str]] = None) -> Dict:
    args = get_parser().parse_args(cmd)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    handler = setup_logging(out)
    try:
        return run(args, out)
    finally:
        logger.removeHandler(handler)
        handler.close()


def run(args, out: Path) -> Dict:
    import torch
    from tqdm import tqdm

    start = time.time()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    for stale in data_dir.glob("*.tmp"):  # left by an interrupted run
        stale.unlink()

    config = {
        "model": args.model,
        "layer": args.layer,
        "token_type": args.token_type,
        "token_list_sha1": file_digest(args.token_list),
        "text": str(Path(args.text).resolve()),
        "text_sha1": file_digest(args.text),
        "chunk_size": args.chunk_size,
        "bpemodel": args.bpemodel,
        "non_linguistic_symbols": args.non_linguistic_symbols,
        "cleaner": args.cleaner,
        "dtype": "float16",
    }
    config_path = out / "config.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text(encoding="utf-8"))
        changed = {k: (previous.get(k), v) for k, v in config.items() if previous.get(k) != v}
        if changed:
            raise ValueError(
                f"{out} holds features made with other settings {changed}; remove it or pick another --output_dir"
            )
    else:
        config_path.write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    utts = read_table_dict(args.text)
    logger.info("%d utterances from %s; model %s layer %d", len(utts), args.text, args.model, args.layer)
    teacher = PLMTeacher(
        args.model, args.token_type, token_list=read_token_list(args.token_list), layer=args.layer,
        space_symbol=args.space_symbol, device=args.device,
    )
    tokenize = asr_tokenizer(args)

    inputs, misaligned = {}, {}
    for utt, text in utts.items():
        tokens = tokenize(text)
        alignment = teacher.aligner.align(tokens)
        if alignment.ok:
            inputs[utt] = alignment.input_ids
        else:
            misaligned[utt] = alignment.reason
    with open(out / "misaligned", "w", encoding="utf-8") as f:
        for utt, reason in misaligned.items():
            f.write(f"{utt}\t{reason}\n")
    if misaligned:
        shown = "; ".join(f"{u}: {r}" for u, r in list(misaligned.items())[:5])
        if args.misaligned_policy == "fail":
            raise ValueError(
                f"{len(misaligned)} of {len(utts)} utterances of {args.text} do not tokenise 1:1 with the PLM "
                f"(listed in {out / 'misaligned'}), e.g. {shown}"
            )
        logger.warning(
            "%d of %d utterances misaligned with the PLM: written as empty (0 x %d) features and left out of "
            "distillation; listed in %s; e.g. %s",
            len(misaligned), len(utts), teacher.dim, out / "misaligned", shown,
        )

    keys = list(utts)
    chunks = [keys[i : i + args.chunk_size] for i in range(0, len(keys), args.chunk_size)]
    done = [i for i in range(len(chunks)) if (data_dir / f"feats.{i}.scp").exists()]
    if done:
        logger.info("resuming: %d of %d chunks already done", len(done), len(chunks))
    todo = [i for i in range(len(chunks)) if i not in set(done)]
    empty = np.zeros((0, teacher.dim), dtype=np.float16)
    computed = 0
    with tqdm(total=sum(len(chunks[i]) for i in todo), unit="utt", desc="PLM features", mininterval=5) as bar:
        for i in todo:
            chunk = chunks[i]
            feats = {u: empty for u in chunk if u not in inputs}
            # Similar lengths per batch: less padding.
            ready = sorted((u for u in chunk if u in inputs), key=lambda u: len(inputs[u]))
            for s in range(0, len(ready), args.batch_size):
                batch = ready[s : s + args.batch_size]
                f, lengths = teacher.features([inputs[u] for u in batch])
                f = f.cpu().numpy().astype(np.float16)
                for b, u in enumerate(batch):
                    feats[u] = f[b, : lengths[b]]
                bar.update(len(batch))
                computed += len(batch)
            bar.update(len(chunk) - len(ready))
            write_chunk(data_dir, i, {u: feats[u] for u in chunk})
            logger.info("chunk %d/%d written (%d utterances)", i + 1, len(chunks), len(chunk))

    # Assemble the final lists (tmp + rename: feats.scp exists only when complete).
    tokens = 0
    for name in ("feats_shape", "feats.scp"):
        ext = "shape" if name == "feats_shape" else "scp"
        with open(out / f"{name}.tmp", "w", encoding="utf-8") as f:
            for i in range(len(chunks)):
                with open(data_dir / f"feats.{i}.{ext}", encoding="utf-8") as c:
                    text = c.read()
                f.write(text)
                if ext == "shape":
                    tokens += sum(int(line.split()[1].split(",")[0]) for line in text.splitlines())
        os.replace(out / f"{name}.tmp", out / name)
    size = sum(p.stat().st_size for p in data_dir.glob("feats.*.ark"))
    summary = {
        "utterances": len(utts),
        "misaligned": len(misaligned),
        "chunks": len(chunks),
        "chunks_skipped": len(done),
        "computed": computed,
        "tokens": tokens,
        "dim": teacher.dim,
        "ark_bytes": size,
        "seconds": round(time.time() - start, 2),
    }
    logger.info("done: %s", json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
