"""Tokenizing a large local corpus into lmlab's sharded token cache, against `datasets.map(batched=True)`:
`python experiments/tokenize_benchmark.py --size-gb 1 --num-proc 2`.

The corpus is .txt files of real English (wikitext-2 test and tinyshakespeare from ../shared/data, repeated to the size
asked; `--sources` takes others). Both contenders start from the files with an empty cache, use the same trained
tokenizer on one thread per process, and read a document per paragraph; each runs in a process of its own, so its
peak RSS (the process and, separately, its largest worker) is its own. Then lmlab's build is killed halfway and rerun,
and the resumed cache is compared with a one-process build of the same files. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT.parent / "shared/data/wikitext2/test.txt", ROOT.parent / "shared/data/tinyshakespeare/input.txt"]
FILE_BYTES = 128 << 20


def make_corpus(directory: Path, size_gb: float, sources: list[Path]) -> list[Path]:
    """Files of ~128 MB holding the sources' text over and over, `size_gb` in all (kept for the next run)."""
    text = "\n\n".join(s.read_text(encoding="utf-8").strip() for s in sources) + "\n\n"
    total = int(size_gb * (1 << 30))
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(-(-total // FILE_BYTES)):
        path = directory / f"part-{index:04d}.txt"
        size = min(FILE_BYTES, total - index * FILE_BYTES)
        if not path.exists() or path.stat().st_size != size:
            data = (text * (size // len(text) + 1)).encode("utf-8")[:size]
            path.write_bytes(data[: data.rfind(b"\n") + 1].ljust(size, b"\n"))
        files.append(path)
    return files


def data_config(files: list[Path], num_proc: int, shard_documents: int):
    from lmlab.data.config import DataConfig

    cfg = DataConfig(name="text", source="files", files=[str(f) for f in files])
    cfg.tokenize.num_proc, cfg.tokenize.shard_documents = num_proc, shard_documents
    cfg.tokenizer.vocab_size, cfg.tokenizer.train_documents = 8192, 20000
    return cfg


def peak_rss_mb() -> tuple[float, float]:
    """(this process, its largest child) peak resident set in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def measure_lmlab(args: argparse.Namespace) -> dict:
    from lmlab.data.corpus import build_corpus
    from lmlab.data.token_cache import load_or_build
    from lmlab.data.tokenizer import load_or_train_tokenizer

    cfg = data_config(args.files, args.num_proc, args.shard_documents)
    corpus = build_corpus(cfg, args.cache / "hf")
    tokenizer = load_or_train_tokenizer(corpus, cfg.tokenizer, args.tokenizer_cache)
    start = time.perf_counter()
    cached = load_or_build(corpus, tokenizer, "train", args.cache, cfg.tokenize)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": cached.n_tokens, "documents": cached.n_documents, "cache": cached.fingerprint}


def measure_datasets(args: argparse.Namespace) -> dict:
    import datasets
    import pyarrow.compute as pc
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(args.tokenizer_file))

    def encode(batch: dict) -> dict:
        return {"ids": [e.ids for e in tokenizer.encode_batch(batch["text"], add_special_tokens=False)]}

    start = time.perf_counter()
    ds = datasets.load_dataset(
        "text", data_files=[str(f) for f in args.files], sample_by="paragraph", split="train", cache_dir=str(args.cache)
    )
    ids = ds.map(encode, batched=True, num_proc=args.num_proc, remove_columns=["text"])
    seconds = time.perf_counter() - start
    lengths = pc.list_value_length(ids.data.column("ids"))
    # + one [SEP] per document, as lmlab stores them
    return {"seconds": seconds, "tokens": int(pc.sum(lengths).as_py()) + len(ids), "documents": len(ids)}


def measure(args: argparse.Namespace) -> None:
    """Child process: one measurement, written as JSON to args.out."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process, for both
    result = (measure_lmlab if args.measure == "lmlab" else measure_datasets)(args)
    result["rss_main_mb"], result["rss_worker_mb"] = peak_rss_mb()
    args.out.write_text(json.dumps(result))


def child(args: argparse.Namespace, what: str, cache: Path, num_proc: int) -> list[str]:
    out = cache.parent / f"{cache.name}.json"
    return [
        sys.executable, __file__, "--measure", what, "--out", str(out), "--cache", str(cache),
        "--num-proc", str(num_proc), "--shard-documents", str(args.shard_documents),
        "--tokenizer-cache", str(args.work / "tokenizer"), "--tokenizer-file", str(args.tokenizer_file),
        "--files", *map(str, args.files),
    ]  # fmt: skip


def run_child(args: argparse.Namespace, what: str, cache: Path, num_proc: int) -> dict:
    shutil.rmtree(cache, ignore_errors=True)
    subprocess.run(child(args, what, cache, num_proc), check=True)
    return json.loads((cache.parent / f"{cache.name}.json").read_text())


def kill_halfway(args: argparse.Namespace, cache: Path, after: float) -> dict[str, int]:
    """Start lmlab's build, SIGKILL it after `after` seconds; {shard: mtime} of the shards it finished."""
    shutil.rmtree(cache, ignore_errors=True)
    process = subprocess.Popen(child(args, "lmlab", cache, args.num_proc), start_new_session=True)
    time.sleep(after)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (entry,) = (cache / "tokens").glob("[!.]*")  # the entry, not its lock file
    assert not (entry / "complete.json").exists(), "the build finished before it was killed"
    return {p.name: p.stat().st_mtime_ns for p in entry.glob("shard-*")}


def same_tokens(a: Path, b: Path) -> bool:
    """The two caches' streams hold the same tokens and document starts, compared shard by shard."""
    from lmlab.data.token_cache import _prefix

    (ea,), (eb,) = (a / "tokens").glob("[!.]*"), (b / "tokens").glob("[!.]*")
    sa, sb = _prefix(ea, None), _prefix(eb, None)
    assert sa is not None and sb is not None
    return len(sa) == len(sb) and all(
        np.array_equal(x.tokens, y.tokens) and np.array_equal(x.document_starts, y.document_starts)
        for x, y in zip(sa, sb, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--shard-documents", type=int, default=8192)
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "tokenize_benchmark")
    parser.add_argument("--sources", type=Path, nargs="+", default=SOURCES)
    parser.add_argument("--measure", choices=["lmlab", "datasets"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args)
        return
    from lmlab.data.corpus import build_corpus
    from lmlab.data.tokenizer import load_or_train_tokenizer

    args.files = make_corpus(args.work / "corpus", args.size_gb, args.sources)
    size = sum(f.stat().st_size for f in args.files)
    cfg = data_config(args.files, 1, args.shard_documents)
    args.tokenizer_file = load_or_train_tokenizer(
        build_corpus(cfg, args.work / "tokenizer" / "hf"), cfg.tokenizer, args.work / "tokenizer"
    ).path
    print(f"corpus: {len(args.files)} files, {size / 1e9:.2f} GB; tokenizer {args.tokenizer_file}", flush=True)
    rows = {
        f"lmlab, num_proc={args.num_proc}": run_child(args, "lmlab", args.work / "lmlab", args.num_proc),
        f"datasets.map(batched=True, num_proc={args.num_proc})": run_child(
            args, "datasets", args.work / "datasets", args.num_proc
        ),
        "lmlab, num_proc=1": run_child(args, "lmlab", args.work / "single", 1),
    }
    print("\n| | seconds | documents | tokens | tokens/s | MB/s | peak RSS main / largest worker (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['seconds']:.1f} | {r['documents']:,} | {r['tokens']:,} | {r['tokens'] / r['seconds']:,.0f} "
            f"| {size / 1e6 / r['seconds']:.1f} | {r['rss_main_mb']:.0f} / {r['rss_worker_mb']:.0f} |"
        )
    ours, theirs = (list(rows.values())[i] for i in (0, 1))
    ratio = ours["tokens"] / ours["seconds"] / (theirs["tokens"] / theirs["seconds"])
    print(f"\nlmlab / datasets.map tokens/s: {ratio:.2f}x")

    resumed_cache = args.work / "resumed"
    finished = kill_halfway(args, resumed_cache, ours["seconds"] / 2)
    subprocess.run(child(args, "lmlab", resumed_cache, args.num_proc), check=True)
    rerun = json.loads((args.work / "resumed.json").read_text())
    (entry,) = (resumed_cache / "tokens").glob("[!.]*")
    after = {p.name: p.stat().st_mtime_ns for p in entry.glob("shard-*")}
    kept = sum(after.get(name) == mtime for name, mtime in finished.items())
    print(
        f"\nkilled after {ours['seconds'] / 2:.1f} s with {len(finished)} of {len(after)} shards written; "
        f"the rerun kept {kept} of them untouched, wrote {len(after) - kept} and took {rerun['seconds']:.1f} s"
    )
    print(f"resumed cache equals the one-process build: {same_tokens(resumed_cache, args.work / 'single')}")


if __name__ == "__main__":
    main()
