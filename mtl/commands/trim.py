"""`mtl trim-vocab`: an encoder folder cut down to the pieces its fine-tuning corpora use
(mtl.components.backbones.trim), with a before/after table so the user sees what the cut bought."""
import argparse
import time
from pathlib import Path

from mtl.components.backbones.trim import trim_vocabulary


def trim_vocab(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    done = trim_vocabulary(args.folder, args.corpus, args.out, args.min_count, args.keep_chars or "")
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")
    print(f"{'':12} {'before':>12} {'after':>12}")
    for what, (before, after), show in (("pieces", done["vocab_size"], "{:,}".format),
                                        ("parameters", done["parameters"], lambda n: f"{n / 1e6:.2f}M"),
                                        ("folder size", (folder_bytes(args.folder), folder_bytes(args.out)),
                                         lambda n: f"{n / 2**20:.1f} MiB")):
        print(f"{what:12} {show(before):>12} {show(after):>12}  ({100 * after / max(before, 1):.1f}%)")
    kept = done["kept"]
    print(f"kept: {kept['special']} special, {kept['used']:,} used by the corpora, {kept['char']:,} single "
          f"characters (fallback), {kept['fallback']} other fallback; {done['unknown_tokens']:,} unknown tokens "
          "in the corpora")
    return 0


def folder_bytes(folder: str | Path) -> int:
    """The bytes of a folder's regular files (links not followed)."""
    files = (path for path in Path(folder).rglob("*") if path.is_file() and not path.is_symlink())
    return sum(path.stat().st_size for path in files)
