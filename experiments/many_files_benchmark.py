"""A corpus of many small files: what reading it costs before step 0, against the per-file `datasets` cache lmlab
used to build. `python experiments/many_files_benchmark.py --files 1000`.

Writes `--files` .txt files of real English paragraphs (wikitext-2 test from ../shared/data, or a synthetic-world
text when it is not there) into a temporary directory, then times, each from a cold cache:
- lmlab: one pass over the corpus's train split (`Corpus.documents`), then `PretrainDataModule.prepare()` (tokenizer
  training and the token cache of both splits);
- the old reader: `datasets.load_dataset("text", data_files=[file])` once per file, as lmlab called it before (one
  Arrow cache per file, and again on every pass).
Prints a table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "wikitext2" / "test.txt"


def paragraphs() -> list[str]:
    if SOURCE.is_file():
        return [line.strip() for line in SOURCE.read_text(encoding="utf-8").splitlines() if len(line.strip()) > 80]
    from lmlab.data.synthetic import World

    world = World(0, n_people=50, n_places=20, n_orgs=20)
    return [world.document(i).text for i in range(2000)]


def write_files(directory: Path, n_files: int) -> list[Path]:
    texts = paragraphs()
    directory.mkdir(parents=True)
    files = []
    for i in range(n_files):
        path = directory / f"doc-{i:05d}.txt"
        path.write_text("\n\n".join(texts[(3 * i + k) % len(texts)] for k in range(3)) + "\n", encoding="utf-8")
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--skip-old", action="store_true", help="do not time the old per-file datasets reader")
    args = parser.parse_args()

    from lmlab.data.config import DataConfig
    from lmlab.data.corpus import build_corpus
    from lmlab.data.datamodule import PretrainDataModule

    work = Path(tempfile.mkdtemp(prefix="lmlab-many-files-"))
    try:
        files = write_files(work / "corpus", args.files)
        cfg = DataConfig(source="files", files=[str(work / "corpus" / "*.txt")], block_size=128, batch_size=16)
        cfg.tokenizer.vocab_size = 8192
        rows = []
        start = time.perf_counter()
        documents = sum(1 for _ in build_corpus(cfg, work / "cache" / "hf").documents("train"))
        rows.append(("lmlab: one read pass (train split)", time.perf_counter() - start, f"{documents} documents"))
        start = time.perf_counter()
        data = PretrainDataModule(cfg, work / "cache", seed=0)
        data.prepare()
        tokens = data.splits["train"].n_tokens + data.splits["validation"].n_tokens
        rows.append(("lmlab: prepare() (tokenizer + token cache)", time.perf_counter() - start, f"{tokens} tokens"))
        if not args.skip_old:
            import datasets

            datasets.disable_progress_bars()
            start = time.perf_counter()
            lines = 0
            for path in files:
                ds = datasets.load_dataset(
                    "text", data_files=[str(path)], split="train", cache_dir=str(work / "old-cache"), sample_by="line"
                )
                lines += len(ds)
            rows.append(("old: datasets cache per file, one pass", time.perf_counter() - start, f"{lines} lines"))
        width = max(len(r[0]) for r in rows)
        print(f"\n{args.files} files, {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB\n")
        print(f"| {'what':<{width}} | seconds | read |")
        print(f"|{'-' * (width + 2)}|--------:|------|")
        for what, seconds, read in rows:
            print(f"| {what:<{width}} | {seconds:7.2f} | {read} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
