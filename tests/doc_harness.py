"""How documented commands are run, as written, at toy size (tests/test_documented_*_run.py run them: README.md's
command blocks in document order, and experiments/README.md's blocks then the examples each entry point's `--help`
prints).

They run in one project made for the purpose: the entry points, conf/ and experiments/ copied with toy sizes (a
2-layer, 32-wide model; a 300-document world; 20 steps; 100-example tasks), the Makefile, scripts and .venv linked,
LMLAB_ROOT pointing at it. What the user would fill in is filled in with something real: a run placeholder
(`<run>`, `<MLflow run id>`, `pretrained=...`) with the default run (its directory or MLflow run id; for
generation, seq2seq and `<clm run>`, the `objective=clm` run), `/path/...` and `../shared/...` with small text
files, and the task files (train.tsv, ...) are written in the formats the tasks read. Step counts written in a
command (`trainer.max_steps=N`) shrink to max(20, N / 100), everywhere in the command, so a run directory named
after them still matches.

A command for a GPU must be refused naming the missing GPU on a machine without one (and is not run at full size on
one). Commands for the Slurm cluster and the PostgreSQL tracking server run when those services are up (`make
services`), else are skipped, or fail under LMLAB_REQUIRE_SERVICES=1 as in CI. `make test-all` is this suite itself."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lmlab.data.synthetic import TERMS, World

from .conftest import ROOT
from .doc_commands import DocCommand

ENTRY_POINTS = (
    *("train.py", "finetune.py", "evaluate.py", "generate.py", "study.py", "metalearn.py", "rl.py", "export.py"),
)
DEFAULT_RUN = "outputs/default/defaults"
DECODER_RUN = "outputs/default/objective=clm"
# conf file (in the copy) -> the settings that make it toy-sized
TOY_SETTINGS = {
    "conf/model/tiny.yaml": {"model.n_layers": 2, "model.d_model": 32, "model.n_heads": 2, "model.d_ff": 64},
    "conf/data/synthetic.yaml": {
        "world.train_documents": 300,
        "world.validation_documents": 40,
        "tokenizer.vocab_size": 700,
        "block_size": 32,
    },
    "conf/data/text.yaml": {"tokenizer.vocab_size": 700, "block_size": 32, "batch_size": 16},
    "conf/trainer/cpu.yaml": {
        "max_steps": 20,
        "val_check_interval": 10,
        "limit_val_batches": 4,
        "log_every_n_steps": 5,
    },
    "conf/finetune.yaml": {
        "trainer.max_steps": 20,
        "trainer.val_check_interval": 10,
        "optim.warmup_steps": 5,
    },
    "experiments/preset/objectives.yaml": {"trainer.max_steps": 20, "trainer.val_check_interval": 10},
    "conf/metalearn.yaml": {
        "trainer.max_steps": 20,
        "trainer.val_check_interval": 10,
        "eval.val_episodes": 4,
        "eval.test_episodes": 10,
        "eval.inner_lrs": [0.1, 1.0],
    },
    "conf/episodes/synthetic_topic.yaml": {"examples_per_class": 16},
    "experiments/preset/fewshot.yaml": {
        "trainer.max_steps": 20,
        "trainer.val_check_interval": 10,
        "eval.val_episodes": 4,
        "eval.test_episodes": 10,
    },
    "experiments/preset/metagpt.yaml": {
        "trainer.max_steps": 20,
        "trainer.val_check_interval": 10,
        "eval.val_episodes": 4,
        "eval.test_episodes": 10,
        "eval.inner_lrs": [0.1],
    },
    "conf/episodes/people.yaml": {"world.people": 15, "max_length": 48},
    "conf/rl.yaml": {"trainer.max_steps": 20, "trainer.val_check_interval": 10, "eval.lm_batches": 2},
    "experiments/preset/rl_sentiment.yaml": {
        "trainer.max_steps": 20,
        "trainer.val_check_interval": 10,
        "rl.max_new_tokens": 8,
    },
    # The local cluster's node has 2 CPUs; the default asks 4 per task.
    "conf/hydra/launcher/slurm.yaml": {"cpus_per_task": 1},
    "conf/study/objectives_synthetic.yaml": {
        "study.steps": 20,
        "study.pretrain": ["trainer.val_check_interval=10", "trainer.limit_val_batches=4", "optim.warmup_steps=5"],
        "study.finetune": ["trainer.max_steps=20", "trainer.val_check_interval=10", "optim.warmup_steps=5"],
        "study.tasks": [{"name": "topic_snippets", "task": "synthetic_topic_snippets", "max_train_examples": 60}],
    },
    "conf/study/objectives_real.yaml": {
        "study.steps": 20,
        "study.seeds": 2,
        "study.pretrain": ["trainer.val_check_interval=10", "trainer.limit_val_batches=4", "optim.warmup_steps=5"],
        "study.finetune": ["trainer.max_steps=20", "trainer.val_check_interval=10", "optim.warmup_steps=5"],
    },
}
TOY_TASK_EXAMPLES = {"train_examples": 100, "validation_examples": 40}
NOT_RUN = {
    "make test-all": "it is this test suite (.ci/run runs it)",
    "make test": "it is this test suite, less its slow tests",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout
    return any(s.startswith(("idle", "mix", "alloc")) for s in state.split())


def _postgres_installed() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _set(path: Path, settings: dict[str, object]) -> None:
    """Set dotted keys in a YAML config, keeping its `# @package` line."""
    text = path.read_text()
    header = [line for line in text.splitlines() if line.startswith("# @package")]
    cfg = OmegaConf.load(path)
    for key, value in settings.items():
        OmegaConf.update(cfg, key, value, force_add=False)
    path.write_text("\n".join([*header, OmegaConf.to_yaml(cfg)]))


def _write_task_files(root: Path, world: World) -> None:
    """Task files in every format the tasks read; the TSV's `fine_label` column has enough classes (30 topic terms,
    16 sentences each) to make few-shot episodes of."""
    docs = world.documents(0, 60)
    rows = ["text\tlabel\tfine_label"] + [f"{d.text.splitlines()[0]}\t{d.topic}\tdocument" for d in docs]
    rows += [f"{world.term_sentence(t, i)}\tterm\t{t}" for t in TERMS[:30] for i in range(16)]
    conll, squad, pairs = [], [], []
    for d in docs:
        words = d.text.split()[:20]
        conll.append("\n".join(f"{w} {'B-PER' if w[:1].isupper() else 'O'}" for w in words) + "\n")
        for question, answer, start in d.facts[:1]:
            qa = {"id": str(len(squad)), "question": question, "answers": [{"text": answer, "answer_start": start}]}
            squad.append({"context": d.text, "qas": [qa]})
        pairs.append(json.dumps({"source": d.text, "target": d.headline}))
    for split in ("train", "dev"):
        (root / f"{split}.tsv").write_text("\n".join(rows) + "\n")
        (root / f"{split}.conll").write_text("-DOCSTART- O\n\n" + "\n".join(conll))
        (root / f"{split}.json").write_text(json.dumps({"data": [{"paragraphs": squad}]}))
        (root / f"{split}.jsonl").write_text("\n".join(pairs) + "\n")


def _make_project(root: Path) -> None:
    for name in ENTRY_POINTS:
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "conf", root / "conf")
    shutil.copytree(ROOT / "experiments", root / "experiments", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml", "requirements", "scripts", ".venv"):
        (root / name).symlink_to(ROOT / name)
    for path, settings in TOY_SETTINGS.items():
        _set(root / path, settings)
    for task in (root / "conf" / "task").glob("synthetic_*.yaml"):
        _set(task, TOY_TASK_EXAMPLES)
    world = World(1234)
    text = "\n\n".join(d.text for d in world.documents(0, 300)) + "\n"
    (root / "texts").mkdir()
    for name in ("corpus.txt", "a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "input.txt"):
        (root / "texts" / name).write_text(text)
    (root / "held_out.txt").write_text(text)
    _write_task_files(root, world)


def _run_id(root: Path, run_dir: str) -> str:
    return json.loads((root / run_dir / "tracking.json").read_text())["run_id"]


def _stand_in(path: Path, root: Path) -> None:
    """A small file of the kind a `../shared/data/` path names (a text corpus, or a labelled TSV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source = root / ("train.tsv" if path.suffix == ".tsv" else "held_out.txt")
    shutil.copy(source, path)


def _fill_in(command: DocCommand, root: Path) -> str:
    """The command as a user would type it here: placeholders filled in, step counts shrunk."""
    text = command.text
    generative = "generate.py" in text or "seq2seq" in text or "<clm run>" in text
    run = DECODER_RUN if generative else DEFAULT_RUN
    run = f"\"'{run}'\"" if "=" in run else run  # Hydra reads a value with `=` only quoted, as the README writes it
    if "<MLflow run id>" in text:
        text = text.replace("<MLflow run id>", _run_id(root, DEFAULT_RUN))
    text = re.sub(r"<[^>]+>", run, text)
    text = re.sub(r"\b(run|pretrained)=\.\.\.(?=\s|$)", rf"\1={run}", text)
    text = re.sub(r"\bprompt=\.\.\.", "prompt='She works for'", text)
    text = text.replace("/path/", f"{root}/texts/")
    for path in re.findall(r"\.\./shared/data/([\w./-]+)", text):
        _stand_in(root / "shared" / path, root)
    text = text.replace("../shared/data/", "shared/")
    return re.sub(r"max_steps=(\d+)", lambda m: f"max_steps={max(20, int(m.group(1)) // 100)}", text)


def _needs(argv: list[str]) -> str | None:
    """The service a command needs that is not up, if any."""
    if "hydra/launcher=slurm" in argv and not _slurm_up():
        return "no Slurm cluster is up (make services)"
    server = "logger=server" in argv or argv[:2] == ["make", "tracking-server"] or "tracking_server.sh" in argv[0]
    if server and not _postgres_installed():
        return "PostgreSQL is not installed (make services)"
    return None


def execute(command: DocCommand, root: Path, env: dict[str, str]) -> str | None:
    """Run one documented command; the reason it was not run, if it was not."""
    written = " ".join(command.argv())
    if written in NOT_RUN:
        return NOT_RUN[written]
    argv = command.argv(_fill_in(command, root))
    gpu = "trainer=gpu" in argv
    if gpu and torch.cuda.is_available():
        return "a full-size GPU run"
    missing = None if gpu else _needs(argv)
    if missing:
        if os.environ.get("LMLAB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{command.where}: LMLAB_REQUIRE_SERVICES=1 but {missing}")
        return missing
    if argv[0] == "python":
        argv[0] = sys.executable
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    output = f"{command.where}: {shlex.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    if gpu:
        assert done.returncode != 0 and "this machine has no CUDA GPU" in done.stderr, output
    else:
        assert done.returncode == 0, output
    return None


def _environment(root: Path, state: Path) -> dict[str, str]:
    port = _free_port()
    return {
        **os.environ,
        "LMLAB_ROOT": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # The tracking-server commands start their own server, on free ports, with a state dir of their own.
        "LMLAB_TRACKING_STATE": str(state),
        "LMLAB_TRACKING_PORT": str(port),
        "LMLAB_PG_PORT": str(_free_port()),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
    }


@contextmanager
def toy_project(root: Path) -> Iterator[dict[str, str]]:
    """Make the toy project at `root`; the environment its commands run in (with the tracking server's state dir,
    removed afterwards)."""
    _make_project(root)
    # PostgreSQL runs as the postgres user when the tests run as root: its dir must not sit under a private tmp.
    state = Path(tempfile.mkdtemp(prefix="lmlab-doc-tracking-", dir="/var/tmp"))
    state.chmod(0o755)
    env = _environment(root, state)
    try:
        yield env
    finally:
        if (state / "mlflow.pid").exists() or (state / "pg").exists():
            subprocess.run([str(ROOT / "scripts" / "tracking_server.sh"), "stop"], env=env, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)


def help_blocks() -> list[list[DocCommand]]:
    """The examples each entry point's --help prints (read from its conf, where Hydra reads them)."""
    blocks = []
    for script, config in zip(
        ENTRY_POINTS, ("config", "finetune", "evaluate", "generate", "study", "metalearn", "rl", "export"), strict=True
    ):
        header = OmegaConf.load(ROOT / "conf" / f"{config}.yaml").hydra.help.header
        lines = [line.strip() for line in header.splitlines() if line.strip().startswith("python ")]
        assert lines, f"{script} --help has no example"
        blocks.append(
            [DocCommand(f"{script} --help", f"python {script} --help")]
            + [DocCommand(f"{script} --help", line) for line in lines]
        )
    return blocks


def run_block(block: list[DocCommand], root: Path, env: dict[str, str]) -> None:
    """Run a block's commands in order; skip the test if none could run, warn about those that could not."""
    skipped = {command.where: execute(command, root, env) for command in block}
    skipped = {where: why for where, why in skipped.items() if why}
    if len(skipped) == len(block):
        pytest.skip(f"not run: {skipped}")
    if skipped:
        warnings.warn(f"not run: {skipped}", stacklevel=1)
