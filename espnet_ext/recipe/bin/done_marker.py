"""Write or check a step's done marker (espnet_ext.recipe.done_marker).

    python -m espnet_ext.recipe.bin.done_marker write dump/fbank/test/.done.fbank \
        --inputs data/test/wav.scp data/test/text --audio_of data/test/wav.scp \
        --outputs dump/fbank/test/data/feats.1.ark --exists dump/fbank/test/feats.scp
    python -m espnet_ext.recipe.bin.done_marker check dump/fbank/test/.done.fbank

``check`` exits 0 when the marker holds, 1 when it does not (missing, or a recorded file changed),
printing why in one line on stderr unless the marker is simply absent (the step is then redone).
``why`` exits the same way and prints the reason on stdout, for a step that must refuse to run
on top of an incomplete one.
"""
import argparse
import os
import sys
from typing import Sequence

from espnet_ext.recipe import done_marker


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    w = sub.add_parser("write", help="record the files of a completed step")
    w.add_argument("marker")
    for name, what in (("inputs", "files the step read"), ("audio_of", "wav.scp files whose audio it read"),
                       ("outputs", "files it wrote"), ("exists", "outputs later steps edit in place")):
        w.add_argument(f"--{name}", nargs="*", default=[], help=what)
    w.add_argument("--options", default="", help="settings the outputs depend on")
    for action in ("check", "why"):
        c = sub.add_parser(action, help="exit 0 if the marker holds" + (
            "; print why not on stdout" if action == "why" else ""))
        c.add_argument("marker")
        c.add_argument("--options", default=None, help="must equal the recorded options")
    return p


def main(cmd: Sequence[str] = None) -> int:
    args = get_parser().parse_args(cmd)
    if args.action == "write":
        try:
            done_marker.write(args.marker, inputs=args.inputs, audio_of=args.audio_of,
                              outputs=args.outputs, exists=args.exists, options=args.options)
        except FileNotFoundError as e:
            print(f"done_marker: {e}", file=sys.stderr)
            return 1
        return 0
    why = done_marker.check(args.marker, args.options)
    if why is None:
        return 0
    if args.action == "why":
        print(why)
    elif os.path.exists(args.marker):
        print(f"{args.marker} no longer holds: {why}; redoing", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
