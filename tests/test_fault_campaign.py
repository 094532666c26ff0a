"""The fault campaign: bad inputs and faults of every kind, table-driven, through the real CLI.

Each case asserts the exit code, that the error is one line without a traceback, and that
nothing on disk was lost or mislabelled. Kinds: concurrent writers, stale or foreign inputs,
clobbering, integrity (bit flips, swapped shards, damaged files), bad data, bad options and
a full disk. Stores come from the deterministic 8-d toy encoder of conftest.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ListSource, ToyEncoder
from monoscope.cli import main
from monoscope.data.files import FilePairs, decode_image
from monoscope.embed import embed
from monoscope.integrity import sha256_file
from monoscope.locks import LOCK_NAME
from monoscope.store import Store

QUIET = ["--device", "cpu", "--quiet"]


class OtherToy(ToyEncoder):
    """The same toy geometry under another model name (a foreign model of equal dimension)."""

    def info(self) -> dict:
        return {"kind": "toy", "id": "other-toy", "revision": "0"}


def make_store(path: Path, n: int = 50, encoder: ToyEncoder | None = None) -> Path:
    return embed(
        encoder or ToyEncoder(),
        ListSource(n),
        path,
        shard_size=16,
        batch_size=8,
        device="cpu",
        progress=False,
    )


def train(store: Path, out: Path, *more: str) -> int:
    args = ["train", "--store", str(store), "--method", "sae-topk", "--out", str(out)]
    return main(args + ["--latents", "16", "--k", "2", "--steps", "30", *more, *QUIET])


def analyze(store: Path, fmap: Path, out: Path, *more: str) -> int:
    args = ["analyze", "--store", str(store), "--featuremap", str(fmap), "--out", str(out)]
    return main(args + [*more, *QUIET])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """Store A (toy, 50 pairs), A2 (same model, 60 pairs), B (other model); maps and analyses."""
    root = tmp_path_factory.mktemp("campaign")
    paths = {
        "store": make_store(root / "store"),
        "store2": make_store(root / "store2", 60),
        "storeB": make_store(root / "storeB", encoder=OtherToy()),
    }
    for name, store, seed in (("fmap", "store", 0), ("fmap2", "store", 1), ("fmapB", "storeB", 0)):
        paths[name] = root / name
        assert train(paths[store], paths[name], "--seed", str(seed)) == 0
    paths["analysis"] = root / "analysis"
    assert analyze(paths["store"], paths["fmap"], paths["analysis"]) == 0
    return paths


def one_error(err: str) -> str:
    """The single error line (progress bars may precede it); never a traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


def copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def tree(path: Path) -> dict[str, str]:
    """Digest of every file under ``path`` but the lock file: what 'nothing lost' compares."""
    return {
        str(p.relative_to(path)): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


HOLD = """
import sys, time
from monoscope.locks import output_lock
with output_lock(sys.argv[1], is_file=sys.argv[2] == "file"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder():
    """Start a separate process that holds the lock on a directory (a concurrent writer)."""
    procs = []

    def start(path: Path, kind: str = "dir") -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path), kind], stdout=subprocess.PIPE, text=True
        )
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


# ------------------------------------------------------------------------- the table


@dataclass
class Case:
    name: str
    kind: str
    act: Callable[[dict[str, Path], Path], int]  # returns the exit code
    code: int
    message: str  # part of the one error line ("" : success expected)
    check: Callable[[dict[str, Path], Path], None] | None = None


def _bit_flip(file: Path, offset: int = -7) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x10
    file.write_bytes(bytes(data))


def doctor_verify(path: Path) -> int:
    try:
        return main(["doctor", "--verify", str(path)])
    except SystemExit as e:  # doctor prints its findings on stdout and exits 1
        return int(e.code)


# -- stale and foreign inputs


def foreign_featuremap(r, tmp):
    return analyze(r["store"], r["fmapB"], tmp / "a")


def foreign_featuremap_forced(r, tmp):
    return analyze(r["store"], r["fmapB"], tmp / "a", "--force")


def check_forced(r, tmp):
    notes = json.loads((tmp / "a" / "summary.json").read_text())["notes"]
    assert "other-toy" in notes[0] and "--force" in notes[0]


def same_model_other_data(r, tmp):
    return analyze(r["store2"], r["fmap"], tmp / "a")


def check_other_data(r, tmp):
    assert "note: the feature map was trained on other data" in (tmp / "stderr.txt").read_text()
    summary = json.loads((tmp / "a" / "summary.json").read_text())
    assert "other data of the same model" in summary["notes"][0]
    assert (
        summary["inputs"]["store"]["fingerprint"]
        != (summary["inputs"]["featuremap"]["trained_on"]["fingerprint"])
    )


def ablate_other_analysis(r, tmp):
    args = ["ablate", "--store", str(r["store"]), "--featuremap", str(r["fmap2"])]
    return main(args + ["--analysis", str(r["analysis"]), "--out", str(tmp / "abl"), *QUIET])


def report_after_reembed(r, tmp):
    store = copy(r["store"], tmp / "store")
    analysis = tmp / "analysis"
    assert analyze(store, r["fmap"], analysis) == 0
    embed(ToyEncoder(), ListSource(50, captions={0: "new"}), store, shard_size=16,
          batch_size=8, device="cpu", progress=False, overwrite=True)  # fmt: skip
    return main(["report", "--analysis", str(analysis), "--out", str(tmp / "r.html")])


def compare_stale(r, tmp):
    store = copy(r["store"], tmp / "store")
    assert analyze(store, r["fmap"], tmp / "a1") == 0
    embed(ToyEncoder(), ListSource(50, captions={3: "changed"}), store, shard_size=16,
          batch_size=8, device="cpu", progress=False, overwrite=True)  # fmt: skip
    return main(["compare", str(tmp / "a1"), str(r["analysis"]), "--out", str(tmp / "c")])


def resume_finished_other_latents(r, tmp):
    fmap = copy(r["fmap"], tmp / "fmap")
    args = ["train", "--store", str(r["store"]), "--method", "sae-topk", "--out", str(fmap)]
    return main(args + ["--latents", "32", "--k", "2", "--steps", "30", "--resume", *QUIET])


def _interrupt_at_first_checkpoint(store: Path, fmap: Path) -> None:
    """Leave an interrupted run in ``fmap``: a checkpoint at step 10, no outputs."""
    from monoscope.featuremaps import checkpoint as T

    real = T.save_checkpoint

    def save_then_stop(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    T.save_checkpoint = save_then_stop
    try:
        assert train(store, fmap, "--checkpoint-every", "10") == 130
    finally:
        T.save_checkpoint = real


def resume_on_changed_store(r, tmp):
    store = copy(r["store"], tmp / "store")
    _interrupt_at_first_checkpoint(store, tmp / "f")
    embed(ToyEncoder(), ListSource(50, captions={1: "changed"}), store, shard_size=16,
          batch_size=8, device="cpu", progress=False, overwrite=True)  # fmt: skip
    return train(store, tmp / "f", "--checkpoint-every", "10", "--resume")


def stale_words_removed(r, tmp):
    analysis = copy(r["analysis"], tmp / "a")
    (analysis / "words.json").write_text('{"stale": true}')
    return analyze(r["store"], r["fmap"], analysis, "--overwrite")


def check_no_words(r, tmp):
    assert not (tmp / "a" / "words.json").exists()
    assert (tmp / "a" / "summary.json").is_file()


# -- clobbering


def train_into_model_folder(r, tmp):
    folder = tmp / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "clip"}')
    (folder / "model.safetensors").write_bytes(b"weights")
    return train(r["store"], folder, "--overwrite")


def check_model_folder(r, tmp):
    assert (tmp / "hf" / "model.safetensors").read_bytes() == b"weights"


def analyze_existing(r, tmp):
    analysis = copy(r["analysis"], tmp / "a")
    return analyze(r["store"], r["fmap"], analysis)


def analyze_into_store(r, tmp):
    store = copy(r["store"], tmp / "store")
    return analyze(store, r["fmap"], store)


def embed_into_foreign(r, tmp):
    folder = tmp / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    data = _pairs_file(tmp, 4)
    return main(["embed", "--model", "pocket", "--data", str(data), "--out", str(folder), *QUIET])


def check_foreign_intact(r, tmp):
    assert {p.name for p in (tmp / "photos").iterdir()} <= {"holiday.jpg", LOCK_NAME}


# -- integrity


def flipped_weights(r, tmp):
    fmap = copy(r["fmap"], tmp / "fmap")
    _bit_flip(fmap / "model.safetensors")
    return doctor_verify(fmap)


def flipped_weights_analyze(r, tmp):
    fmap = copy(r["fmap"], tmp / "fmap")
    _bit_flip(fmap / "model.safetensors")
    return analyze(r["store"], fmap, tmp / "a")


def swapped_shards(r, tmp):
    store = copy(r["store"], tmp / "store")
    a, b = store / "image" / "00000.npy", store / "image" / "00001.npy"
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    return doctor_verify(store)


def flipped_shard_bit(r, tmp):
    store = copy(r["store"], tmp / "store")
    _bit_flip(store / "text" / "00002.npy")
    return doctor_verify(store)


def duplicated_pairs_line(r, tmp):
    store = copy(r["store"], tmp / "store")
    lines = (store / "pairs.jsonl").read_text().splitlines(keepends=True)
    (store / "pairs.jsonl").write_text("".join([lines[0], *lines[:-1]]))
    return analyze(store, r["fmap"], tmp / "a")


def edited_caption_same_size(r, tmp):
    store = copy(r["store"], tmp / "store")
    text = (store / "pairs.jsonl").read_text()
    (store / "pairs.jsonl").write_text(text.replace("caption 7", "caption X", 1))
    return main(["ablate", "--store", str(store), "--featuremap", str(r["fmap"]),
                 "--out", str(tmp / "abl"), "--labels", "parity", *QUIET])  # fmt: skip


def report_edited_caption(r, tmp):
    store = copy(r["store"], tmp / "store")
    assert analyze(store, r["fmap"], tmp / "a") == 0
    text = (store / "pairs.jsonl").read_text()
    (store / "pairs.jsonl").write_text(text.replace("caption 7", "caption X", 1))
    return main(["report", "--analysis", str(tmp / "a"), "--out", str(tmp / "r.html")])


def manifest_not_a_dict(r, tmp):
    store = copy(r["store"], tmp / "store")
    (store / "manifest.json").write_text("[1, 2]")
    return analyze(store, r["fmap"], tmp / "a")


def manifest_without_shards(r, tmp):
    store = copy(r["store"], tmp / "store")
    m = json.loads((store / "manifest.json").read_text())
    del m["shards"]
    (store / "manifest.json").write_text(json.dumps(m))
    return analyze(store, r["fmap"], tmp / "a")


def damaged_safetensors_header(r, tmp):
    fmap = copy(r["fmap"], tmp / "fmap")
    data = bytearray((fmap / "model.safetensors").read_bytes())
    data[8:20] = b"not json at!"
    (fmap / "model.safetensors").write_bytes(bytes(data))
    return analyze(r["store"], fmap, tmp / "a")


def config_without_hparams(r, tmp):
    fmap = copy(r["fmap"], tmp / "fmap")
    c = json.loads((fmap / "config.json").read_text())
    c["hparams"] = [1]
    (fmap / "config.json").write_text(json.dumps(c))
    return analyze(r["store"], fmap, tmp / "a")


def report_damaged_pairs_line(r, tmp):
    store = copy(r["store"], tmp / "store")
    analysis = tmp / "a"
    assert analyze(store, r["fmap"], analysis) == 0
    text = (store / "pairs.jsonl").read_text()
    (store / "pairs.jsonl").write_text("#" + text[1:])  # same size: the cheap checks pass
    m = json.loads((store / "manifest.json").read_text())
    del m["pairs_sha256"]  # as in a store written before checksums: the JSON error names it
    (store / "manifest.json").write_text(json.dumps(m))
    return main(["report", "--analysis", str(analysis), "--out", str(tmp / "r.html")])


def npy_header_damaged(r, tmp):
    store = copy(r["store"], tmp / "store")
    f = store / "image" / "00001.npy"
    data = bytearray(f.read_bytes())
    data[:6] = b"NOTNPY"
    f.write_bytes(bytes(data))
    return analyze(store, r["fmap"], tmp / "a")


def ablate_into_analysis(r, tmp):
    analysis = copy(r["analysis"], tmp / "a")
    args = ["ablate", "--store", str(r["store"]), "--featuremap", str(r["fmap"])]
    return main(args + ["--out", str(analysis), "--labels", "parity", *QUIET])


def compare_into_foreign(r, tmp):
    folder = tmp / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("x")
    return main(["compare", str(r["analysis"]), str(r["analysis"]), "--names", "a", "b",
                 "--out", str(folder)])  # fmt: skip


def train_into_store(r, tmp):
    store = copy(r["store"], tmp / "store")
    return train(store, store)


def embed_overwrite_foreign_keeps_files(r, tmp):
    folder = tmp / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    data = _pairs_file(tmp, 4)
    return embed_cli(data, folder, "--overwrite")


def check_overwrite_kept(r, tmp):
    assert (tmp / "photos" / "holiday.jpg").read_bytes() == b"jpeg"
    assert Store(tmp / "photos").count == 4


def tiny_store(r, tmp):
    store = make_store(tmp / "tiny", 3)
    assert train(store, tmp / "fm") == 0
    return analyze(store, tmp / "fm", tmp / "a")


# -- bad data


def _pairs_file(tmp: Path, n: int, extra: list[dict] | None = None, name="pairs.jsonl") -> Path:
    (tmp / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), (i * 20) % 256, np.uint8)).save(tmp / "img" / f"{i}.png")
        rows.append({"image": f"img/{i}.png", "caption": f"a picture {i}"})
    rows += extra or []
    path = tmp / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def embed_cli(data: Path, out: Path, *more: str) -> int:
    return main(
        ["embed", "--model", "pocket", "--data", str(data), "--out", str(out), *more, *QUIET]
    )


def unbalanced_csv(r, tmp):
    _pairs_file(tmp, 3)
    rows = ["image,caption"] + [f"img/{i}.png,caption {i}" for i in range(3)]
    rows.insert(2, 'img/1.png,"an unbalanced quote')
    (tmp / "p.csv").write_text("\n".join(rows) + "\n")
    return embed_cli(tmp / "p.csv", tmp / "s")  # the quote opens on line 3


def bomb_and_bad_captions(r, tmp):
    Image.new("L", (1200, 1000)).save(tmp / "big.png")
    loop = tmp / "loop.png"
    os.symlink(loop, loop)
    extra = [
        {"image": "big.png", "caption": "a decompression bomb"},
        {"image": "img/0.png", "caption": ["a", "list"]},
        {"image": "img/1.png", "caption": {"a": "dict"}},
        {"image": "loop.png", "caption": "a symlink loop"},
    ]
    data = _pairs_file(tmp, 6, extra)
    return embed_cli(data, tmp / "s", "--max-pixels", "1000000")


def check_skips(r, tmp):
    console = (tmp / "stderr.txt").read_text()
    assert "skipped 4 records: caption not a string 2, image too large 1, missing image 1" in (
        console
    )
    m = Store(tmp / "s").manifest
    assert m["count"] == 6
    assert m["skipped"]["reasons"] == {
        "image too large": 1,
        "caption not a string": 2,
        "missing image": 1,
    }


def duplicate_ids(r, tmp):
    data = _pairs_file(tmp, 3, [{"image": "img/0.png", "caption": "x", "id": "2"}])
    return embed_cli(data, tmp / "s")


def boolean_id(r, tmp):
    data = _pairs_file(tmp, 3, [{"image": "img/0.png", "caption": "x", "id": False}])
    return embed_cli(data, tmp / "s")


def falsy_ids_kept(r, tmp):
    extra = [{"image": "img/0.png", "caption": "zero", "id": 0}]
    data = _pairs_file(tmp, 2, extra)
    return embed_cli(data, tmp / "s")


def check_ids(r, tmp):
    assert [p["id"] for p in Store(tmp / "s").pairs()] == ["1", "2", "0"]


def mps_device(r, tmp):
    args = ["train", "--store", str(r["store"]), "--method", "sae-topk", "--out", str(tmp / "f")]
    return main(args + ["--device", "mps", "--quiet"])


# -- a full disk


def _full_disk_after(calls: int):
    """Patch os.replace (every atomic write's last step) to fail with ENOSPC from call N."""
    real, count = os.replace, {"n": 0}

    def replace(*a, **k):
        count["n"] += 1
        if count["n"] >= calls:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    return real, replace


def disk_full_in_train(r, tmp):
    real, full = _full_disk_after(4)  # after a checkpoint or two
    os.replace = full
    try:
        return train(r["store"], tmp / "f", "--checkpoint-every", "10")
    finally:
        os.replace = real


def disk_full_in_analyze(r, tmp):
    real, full = _full_disk_after(2)
    os.replace = full
    try:
        return analyze(r["store"], r["fmap"], tmp / "a")
    finally:
        os.replace = real


def check_analyze_reruns(r, tmp):
    assert not list((tmp / "a").rglob("*.tmp"))  # no partial file left
    assert "a/top/" in (tmp / "stderr.txt").read_text()  # the line names the file
    assert analyze(r["store"], r["fmap"], tmp / "a", "--overwrite") == 0


def check_train_resumes(r, tmp):
    log = (tmp / "f" / "train_log.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in log)  # no torn line
    assert train(r["store"], tmp / "f", "--checkpoint-every", "10", "--resume") == 0
    assert (tmp / "f" / "metrics.json").is_file()


CASES = [
    Case("feature map of another model", "stale", foreign_featuremap, 2, "pass --force"),
    Case("... forced", "stale", foreign_featuremap_forced, 0, "", check_forced),
    Case("other data, same model", "stale", same_model_other_data, 0, "", check_other_data),
    Case("ablate --analysis of another map", "stale", ablate_other_analysis, 2, "stale analysis"),
    Case("report after re-embed", "stale", report_after_reembed, 2, "stale analysis"),
    Case("compare a stale analysis", "stale", compare_stale, 2, "stale analysis"),
    Case(
        "resume finished, other --latents",
        "stale",
        resume_finished_other_latents,
        2,
        "pass --overwrite",
    ),
    Case(
        "resume on a re-embedded store",
        "stale",
        resume_on_changed_store,
        2,
        "the store changed since the interrupted run",
    ),
    Case("stale words.json", "stale", stale_words_removed, 0, "", check_no_words),
    Case(
        "train into a model folder",
        "clobber",
        train_into_model_folder,
        2,
        "would replace",
        check_model_folder,
    ),
    Case("analyze over an analysis", "clobber", analyze_existing, 2, "pass --overwrite"),
    Case("analyze into a store", "clobber", analyze_into_store, 2, "holds a store"),
    Case(
        "embed into a photo folder",
        "clobber",
        embed_into_foreign,
        2,
        "not empty",
        check_foreign_intact,
    ),
    Case("bit flip in weights", "integrity", flipped_weights, 1, "model.safetensors"),
    Case("bit flip in weights, analyze", "integrity", flipped_weights_analyze, 2, "checksum"),
    Case("swapped shard files", "integrity", swapped_shards, 1, "image/00000.npy"),
    Case("bit flip in a shard", "integrity", flipped_shard_bit, 1, "text/00002.npy"),
    Case("duplicated pairs line", "integrity", duplicated_pairs_line, 2, "pairs.jsonl"),
    Case("edited caption, same size", "integrity", edited_caption_same_size, 2, "checksum"),
    Case("report, edited caption", "integrity", report_edited_caption, 2, "checksum"),
    Case("manifest not an object", "integrity", manifest_not_a_dict, 2, "not a JSON object"),
    Case("manifest without shards", "integrity", manifest_without_shards, 2, "shards"),
    Case("damaged safetensors", "integrity", damaged_safetensors_header, 2, "model.safetensors"),
    Case("config.json hparams", "integrity", config_without_hparams, 2, "hparams"),
    Case("report, damaged pairs line", "integrity", report_damaged_pairs_line, 2, "line 1"),
    Case("damaged .npy header", "integrity", npy_header_damaged, 2, "image/00001.npy"),
    Case("ablate into an analysis", "clobber", ablate_into_analysis, 2, "holds an analysis"),
    Case("train into a store", "clobber", train_into_store, 2, "holds a store"),
    Case("compare into a notes folder", "clobber", compare_into_foreign, 2, "not empty"),
    Case(
        "embed --overwrite, foreign files",
        "clobber",
        embed_overwrite_foreign_keeps_files,
        0,
        "",
        check_overwrite_kept,
    ),
    Case("store of 3 pairs", "bad input", tiny_store, 2, "at least 5"),
    Case("unbalanced CSV quote", "bad input", unbalanced_csv, 2, "p.csv: line 3"),
    Case("bomb, list/dict captions, loop", "bad input", bomb_and_bad_captions, 0, "", check_skips),
    Case("duplicate ids", "bad input", duplicate_ids, 2, "already used on line"),
    Case("boolean id", "bad input", boolean_id, 2, "not a non-empty string"),
    Case("ids 0 kept as given", "bad input", falsy_ids_kept, 0, "", check_ids),
    Case("--device mps", "bad input", mps_device, 2, "MPS is not available"),
    Case(
        "disk full in train",
        "disk full",
        disk_full_in_train,
        1,
        "No space left on device",
        check_train_resumes,
    ),
    Case(
        "disk full in analyze",
        "disk full",
        disk_full_in_analyze,
        1,
        "No space left on device",
        check_analyze_reruns,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case, run: dict[str, Path], tmp_path: Path, capsys) -> None:
    before = {k: tree(v) for k, v in run.items()}
    code = case.act(run, tmp_path)
    out, err = capsys.readouterr()
    assert code == case.code, err
    assert "Traceback" not in err
    if case.message and code == 1 and case.kind == "integrity":  # doctor: one finding, stdout
        assert len(out.strip().splitlines()) == 1 and case.message in out, out
    elif case.message:
        assert case.message in one_error(err)
    (tmp_path / "stderr.txt").write_text(err)
    if case.check:
        case.check(run, tmp_path)
    assert {k: tree(v) for k, v in run.items()} == before  # the shared inputs are untouched


BAD_OPTIONS = [
    ["train", "--lr", "0"],
    ["train", "--lr", "nan"],
    ["train", "--lr", "-0.01"],
    ["train", "--batch-size", "0"],
    ["train", "--batch-size", "-1"],
    ["train", "--seed", "-1"],
    ["train", "--seed", str(2**70)],
    ["train", "--l1", "-5"],
    ["train", "--checkpoint-every", "-1"],
    ["train", "--device", "tpu"],
    ["analyze", "--top-m", "0"],
    ["analyze", "--top-m", "-5"],
    ["analyze", "--batch-size", "0"],
    ["ablate", "--max-pairs", "0"],
    ["ablate", "--control-seeds", "0"],
    ["ablate", "--template", "no slot"],
    ["embed", "--dtype", "fp7"],
    ["embed", "--max-pixels", "0"],
    ["study", "gender", "--fdr", "1.5"],
    ["study", "adversarial", "--eps", "-1"],
    ["study", "steer", "--alphas", "inf"],
    ["decoder", "train", "--lr", "0"],
]
REQUIRED = {
    "train": ["--store", "s", "--method", "sae-topk", "--out", "o"],
    "analyze": ["--store", "s", "--featuremap", "f", "--out", "o"],
    "ablate": ["--store", "s", "--featuremap", "f", "--out", "o"],
    "embed": ["--model", "pocket", "--data", "emoji", "--out", "o"],
}
STUDY_REQUIRED = ["--store", "s", "--featuremap", "f", "--out", "o"]


@pytest.mark.parametrize("argv", BAD_OPTIONS, ids=[" ".join(a) for a in BAD_OPTIONS])
def test_bad_option_is_a_usage_error(argv: list[str], capsys) -> None:
    if argv[0] in ("study", "decoder"):
        argv = [
            *argv[:2],
            *(STUDY_REQUIRED if argv[0] == "study" else ["--store", "s", "--out", "o"]),
            *argv[2:],
        ]
    else:
        argv = [argv[0], *REQUIRED[argv[0]], *argv[1:]]
    option = next(a for a in reversed(argv) if a.startswith("--"))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"argument {option}" in one_error(capsys.readouterr().err)


# ------------------------------------------------------------ concurrent writers


@pytest.mark.parametrize("command", ["embed", "train", "analyze", "report"])
def test_second_writer_stops_naming_the_holder(command, run, tmp_path, holder, capsys) -> None:
    out = tmp_path / ("r.html" if command == "report" else "out")
    if command == "report":
        p = holder(out, "file")
        code = main(["report", "--analysis", str(run["analysis"]), "--out", str(out)])
    else:
        p = holder(out)
        code = {
            "embed": lambda: embed_cli(_pairs_file(tmp_path, 2), out),
            "train": lambda: train(run["store"], out),
            "analyze": lambda: analyze(run["store"], run["fmap"], out),
        }[command]()
    assert code == 2
    line = one_error(capsys.readouterr().err)
    assert f"PID {p.pid}" in line and "another monoscope process" in line
    assert not out.is_file() and not (out.is_dir() and set(tree(out)))


def test_reader_of_a_store_being_written_says_so(run, tmp_path, holder, capsys) -> None:
    store = copy(run["store"], tmp_path / "store")
    p = holder(store)
    assert train(store, tmp_path / "f") == 2
    line = one_error(capsys.readouterr().err)
    assert "still being written" in line and f"PID {p.pid}" in line and "--resume" not in line
    assert doctor_verify(store) == 1  # doctor reports, and suggests no racing command
    assert "being written now" in capsys.readouterr().out


def test_two_real_embeds_race_one_wins(tmp_path) -> None:
    """Two embed processes into one --out at once: one writes a sound store, the other stops."""
    data = _pairs_file(tmp_path, 40)
    out = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monoscope.cli", "embed", "--model", "pocket", "--data"]
    cmd += [str(data), "--out", str(out), "--overwrite", "--batch-size", "4", *QUIET]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    if codes == [0, 0]:  # the first finished before the second started: both are sound runs
        pass
    else:
        assert codes == [0, 2], results
        assert "another monoscope process" in next(e for c, e in results if c == 2)
    assert doctor_verify(out) == 0


# ------------------------------------------------------------------ image decoding


def test_16_bit_and_float_images_keep_their_brightness(tmp_path) -> None:
    grey16 = np.full((8, 8), 32768, np.uint16)  # mid-grey in 16 bits
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / "f.tif")
    for name in ("g16.png", "f.tif"):
        rgb = np.asarray(decode_image(tmp_path / name))
        assert rgb.shape == (8, 8, 3) and abs(int(rgb.mean()) - 128) <= 1, name


def test_csv_row_with_extra_fields_is_an_error(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    (tmp_path / "p.csv").write_text("image,caption\na.png,one\na.png,two,three\n")
    with pytest.raises(Exception, match="line 3 has more fields"):
        len(FilePairs(tmp_path / "p.csv"))


def test_torn_log_line_after_a_full_disk_is_dropped_on_resume(run, tmp_path) -> None:
    """A log line that a full disk cut short (an older monoscope) does not stop --resume."""
    fmap = tmp_path / "f"
    from monoscope.featuremaps import checkpoint as T

    real = T.save_checkpoint
    calls = {"n": 0}

    def stop_after_first(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        raise KeyboardInterrupt

    T.save_checkpoint = stop_after_first
    try:
        assert train(run["store"], fmap, "--checkpoint-every", "10") == 130
    finally:
        T.save_checkpoint = real
    with open(fmap / "train_log.jsonl", "a") as f:
        f.write('{"step": 11, "lo')
    assert train(run["store"], fmap, "--checkpoint-every", "10", "--resume") == 0
    lines = (fmap / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == sorted(json.loads(x)["step"] for x in lines)


def test_verify_is_clean_on_sound_outputs(run) -> None:
    for name in ("store", "fmap", "analysis"):
        assert doctor_verify(run[name]) == 0


def test_default_pixel_limit_skips_a_12000_square_png_without_decoding(tmp_path) -> None:
    """A PNG whose header claims 12,000 x 12,000 pixels is refused from its header alone."""
    import struct
    import zlib

    from monoscope.data import BadRecord

    Image.new("L", (1, 1)).save(tmp_path / "small.png")
    data = bytearray((tmp_path / "small.png").read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 12000, 12000)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(BadRecord) as e:
        decode_image(tmp_path / "bomb.png")
    assert e.value.reason == "image too large" and "12000x12000" in str(e.value)


def test_fingerprint_is_a_function_of_the_content(tmp_path) -> None:
    a, b = make_store(tmp_path / "a"), make_store(tmp_path / "b")
    c = embed(ToyEncoder(), ListSource(50, captions={9: "other"}), tmp_path / "c",
              shard_size=16, batch_size=8, device="cpu", progress=False)  # fmt: skip
    fp = [Store(p).manifest["fingerprint"] for p in (a, b, c)]
    assert fp[0] == fp[1] != fp[2] and fp[0].startswith("sha256:")
    shard = Store(a).manifest["shards"][0]
    assert shard["image_sha256"] == sha256_file(a / "image" / "00000.npy")
    assert shard["image_bytes"] == (a / "image" / "00000.npy").stat().st_size


def test_the_python_api_locks_its_output_too(run, tmp_path, holder) -> None:
    from monoscope._util import MonoscopeError
    from monoscope.analysis.analyze import analyze as analyze_api

    p = holder(tmp_path / "a")
    with pytest.raises(MonoscopeError, match=f"PID {p.pid}"):
        analyze_api(run["store"], run["fmap"], tmp_path / "a", progress=False)
    with pytest.raises(MonoscopeError, match=f"PID {p.pid}"):
        make_store(tmp_path / "a")


def test_report_on_an_analysis_being_written_says_so(run, tmp_path, holder, capsys) -> None:
    analysis = copy(run["analysis"], tmp_path / "a")
    p = holder(analysis)
    assert main(["report", "--analysis", str(analysis), "--out", str(tmp_path / "r.html")]) == 2
    line = one_error(capsys.readouterr().err)
    assert "analysis is still being written" in line and f"PID {p.pid}" in line


def test_duplicate_ids_from_any_source_are_refused_at_merge(tmp_path) -> None:
    from collections import Counter

    from monoscope._util import MonoscopeError
    from monoscope.store import StoreWriter

    header = {"model": {}, "dim": 2, "normalized": False, "source": {}, "shard_size": 2}
    w = StoreWriter(tmp_path / "s", header)
    x = np.zeros((2, 2), np.float32)
    for b, ids in enumerate((["a", "b"], ["c", "a"])):
        recs = [{"id": i, "caption": "x\ny", "image_ref": "", "labels": {}} for i in ids]
        w.add_shard(b, x, x, recs, Counter())
    w.end(4)
    with pytest.raises(MonoscopeError, match=r"'a' occurs twice \(stored rows 0 and 3\)"):
        w.finish()
    assert not (tmp_path / "s" / "manifest.json").exists()  # the store stays incomplete


def test_a_file_system_without_flock_warns_and_goes_on(tmp_path, monkeypatch, capsys) -> None:
    import fcntl

    from monoscope.locks import output_lock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with output_lock(tmp_path / "out"):
        (tmp_path / "out" / "x").write_text("written")
    assert "cannot lock" in capsys.readouterr().err
    assert (tmp_path / "out" / "x").read_text() == "written"
