"""Command line of ``utils/data_dir.py`` (see :mod:`espnet_ext.recipe.datadir`)."""
import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from espnet_ext.recipe import datadir as dd
from espnet_ext.utils.kaldi_table import TableError, read_table, write_table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="data_dir.py", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("validate", help="check sorting, unique ids, consistent tables")
    s.add_argument("dir")
    s.add_argument("--no_text", action="store_true", help="text is not required")
    s.add_argument("--no_audio", action="store_true", help="wav.scp/feats.scp not required")
    s = sub.add_parser("fix", help="keep utterances present in every table; report the rest")
    s.add_argument("dir")
    s.add_argument("--utt_extra_files", nargs="*", default=[],
                   help="more per-utterance tables to keep in sync")
    s = sub.add_parser("split", help="split by utterance into DIR/split<N>utt/{1..N}")
    s.add_argument("dir")
    s.add_argument("n", type=int)
    s = sub.add_parser("split_scp", help="split a table into the given output files")
    s.add_argument("scp")
    s.add_argument("outputs", nargs="+")
    s = sub.add_parser("combine", help="merge data directories into DEST")
    s.add_argument("dest")
    s.add_argument("srcs", nargs="+")
    s = sub.add_parser("spk2utt", help="regenerate DIR/spk2utt from DIR/utt2spk")
    s.add_argument("dir")
    s = sub.add_parser("subset", help="copy SRC restricted to the ids listed in ID_LIST to DEST")
    s.add_argument("src")
    s.add_argument("id_list", help="file whose first column lists the utterance ids")
    s.add_argument("dest")
    s = sub.add_parser("perturb_speed", help="speed-perturbed copy (ids prefixed sp<F>-)")
    s.add_argument("factor", type=float)
    s.add_argument("src")
    s.add_argument("dest")
    s = sub.add_parser("filter", help="drop utterances by length in frames (needs utt2num_frames)")
    s.add_argument("dir")
    s.add_argument("--min_frames", type=int, default=0)
    s.add_argument("--max_frames", type=int, default=0, help="0: no upper limit")
    s = sub.add_parser("lm_text", help="LM training text without dev/test sentences")
    s.add_argument("output")
    s.add_argument("--input", nargs="+", required=True, help="Kaldi-format text files")
    s.add_argument("--exclude", nargs="*", default=[], help="dev/test texts to keep out")
    return p


def main(argv: Sequence[str] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "validate":
            dd.validate_data_dir(args.dir, need_text=not args.no_text,
                                 need_audio=not args.no_audio)
            n = len(read_table(Path(args.dir) / "utt2spk"))
            print(f"data_dir.py validate: {args.dir} is valid ({n} utterances)", file=sys.stderr)
        elif args.command == "fix":
            dd.fix_data_dir(args.dir, utt_extra_files=args.utt_extra_files)
        elif args.command == "split":
            dd.split_data_dir(args.dir, args.n)
        elif args.command == "split_scp":
            dd.split_scp(args.scp, args.outputs)
        elif args.command == "combine":
            dd.combine_data_dirs(args.dest, args.srcs)
        elif args.command == "spk2utt":
            d = Path(args.dir)
            write_table(d / "spk2utt", dd.utt2spk_to_spk2utt(read_table(d / "utt2spk")))
        elif args.command == "subset":
            ids = [utt for utt, _ in read_table(args.id_list)]
            dd.subset_data_dir(args.src, args.dest, ids)
        elif args.command == "perturb_speed":
            dd.perturb_speed(args.src, args.dest, args.factor)
        elif args.command == "lm_text":
            dd.prepare_lm_text(args.input, args.output, args.exclude)
        elif args.command == "filter":
            dd.filter_by_length(args.dir, args.min_frames, args.max_frames)
    except (dd.DataDirError, TableError, OSError) as e:
        print(f"data_dir.py {args.command}: {e}", file=sys.stderr)
        return 1
    return 0
