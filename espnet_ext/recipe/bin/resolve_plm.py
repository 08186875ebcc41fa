"""Print the local directory of a pre-trained LM (tokenizer + weights) for asr.sh.

    python -m espnet_ext.recipe.bin.resolve_plm bert-base-uncased [--download_dir downloads/plm]
        [--download true]

NAME may be a local directory (printed as is), a Hugging Face model name already in the HF cache
(resolved offline), or, with ``--download true`` and network, a name fetched into
``<download_dir>/<name>``. Otherwise exits 1 with a message saying what to do: recipes run with
HF_HUB_OFFLINE=1 (path.sh), so a model is never fetched behind the user's back.
"""
import argparse
import os
import subprocess
import sys
import urllib.request
from pathlib import Path


def reachable(url: str, timeout: float = 10.0) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - any failure means "no network" here
        return False


def resolve(name: str, download_dir: Path, download: bool) -> Path:
    if Path(name).is_dir():
        return Path(name).resolve()
    local = download_dir / name
    if (local / "config.json").is_file():
        return local.resolve()
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise SystemExit(f"resolve_plm: {name} is not a directory and huggingface_hub is "
                         f"missing ({e})")
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache
        pass
    if not download:
        raise SystemExit(
            f"resolve_plm: the PLM '{name}' is neither a directory nor in the Hugging Face cache.\n"
            f"  Give a local copy (e.g. run.sh --plm /path/to/{name}), or rerun with --download true "
            f"on a machine with network\n  (it is saved to {local}), or fetch it elsewhere with "
            f"`huggingface-cli download {name} --local-dir {local}`.")
    if not reachable(f"https://huggingface.co/{name}/resolve/main/config.json"):
        raise SystemExit(f"resolve_plm: cannot reach huggingface.co to download '{name}' (no "
                         f"network); copy the model to {local} or pass --plm DIR.")
    # huggingface_hub reads HF_HUB_OFFLINE at import: download in a child process with it off.
    code = ("import sys; from huggingface_hub import snapshot_download; "
            "snapshot_download(sys.argv[1], local_dir=sys.argv[2], "
            "allow_patterns=['*.json', '*.txt', '*.safetensors', '*.model'])")
    env = dict(os.environ, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")
    print(f"resolve_plm: downloading {name} to {local}", file=sys.stderr)
    subprocess.run([sys.executable, "-c", code, name, str(local)], env=env, check=True)
    return local.resolve()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="local directory or Hugging Face model name")
    p.add_argument("--download_dir", type=Path, default=Path("downloads/plm"))
    p.add_argument("--download", choices=["true", "false"], default="false")
    args = p.parse_args(argv)
    print(resolve(args.name, args.download_dir, args.download == "true"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
