"""`tokenforge shards make` on miniature copies of the field's dataset layouts, built in tmp_path from the bundled
data: ImageNet (train class folders, the validation folder with LOC_val_solution.csv or 'FILE LABEL' lines),
LibriSpeech and LibriTTS (speaker/chapter folders with transcripts), ShapeNet and Objaverse (mesh folders with
categories and metadata JSON). The layout is detected, and every sample carries its labels (``cls``), text
(``txt``) and facts (``json``)."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import pytest
import soundfile as sf
from PIL import Image

from tokenforge.data.cli import main as shards_main
from tokenforge.data.datamodule import ShardDataModule
from tokenforge.data.layouts import detect
from tokenforge.data.shards import make_shards
from tokenforge.errors import UsageError

WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n02102040": "English springer"}
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "coins.png", "moon.png", "brick.png",
          "cell.png", "china.jpg"]


def samples(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    """Every sample of a split's shards: key -> {extension: bytes}."""
    found: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob(f"{split}-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                found.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return found


def extras(sample: dict[str, bytes]) -> tuple[int | None, str | None, dict]:
    cls = int(sample["cls"]) if "cls" in sample else None
    return cls, sample["txt"].decode() if "txt" in sample else None, json.loads(sample["json"])


def small_jpeg(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.open(source).convert("RGB").resize((24, 24)).save(target, format="JPEG", quality=90)


@pytest.fixture()
def imagenet(shared_data: Path, tmp_path: Path) -> Path:
    """Kaggle's layout: train/WNID/*.JPEG, a flat val/ folder, LOC_val_solution.csv, LOC_synset_mapping.txt."""
    root = tmp_path / "imagenet"
    photos = iter(PHOTOS)
    for wnid in WNIDS:
        for n in range(2):
            small_jpeg(shared_data / "images" / next(photos), root / "train" / wnid / f"{wnid}_{n}.JPEG")
    truth = {1: "n02102040", 2: "n01440764", 3: "n02102040"}
    for n in truth:
        small_jpeg(shared_data / "images" / next(photos), root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    rows = ["ImageId,PredictionString"]
    rows += [f"ILSVRC2012_val_{n:08d},{w} 1 2 20 20 {w} 3 3 9 9" for n, w in truth.items()]
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {name}, other name\n" for w, name in WNIDS.items()))
    return root


def test_imagenet_train_folders_and_validation_labels(imagenet: Path, tmp_path: Path) -> None:
    assert detect(imagenet, "images") == "imagenet"
    out = tmp_path / "out"
    assert shards_main(["make", "images", str(imagenet), str(out), "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layout"] == "imagenet" and manifest["classes"] == sorted(WNIDS)
    assert manifest["splits"]["train"]["count"] == 6 and manifest["splits"]["val"]["count"] == 3
    train = samples(out, "train")
    for key, sample in train.items():  # key n01443537__n01443537_1 -> its class folder
        cls, txt, facts = extras(sample)
        wnid = key.split("__")[1]
        assert cls == sorted(WNIDS).index(wnid) and txt == WNIDS[wnid] and facts["wnid"] == wnid
        assert facts["class_name"] == WNIDS[wnid] and facts["source"].startswith(wnid)
    val = {key.rsplit("_", 1)[1]: extras(s) for key, s in samples(out, "val").items()}
    assert {n: (c, t) for n, (c, t, _) in val.items()} == {
        "00000001": (2, "English springer"), "00000002": (0, "tench"), "00000003": (2, "English springer")}
    # the batches carry them too
    dm = ShardDataModule(train=str(out), val=str(out), image_size=16, batch_size=3)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert sorted(batch["cls"].tolist()) == [0, 2, 2] and sorted(batch["txt"])[0] == "English springer"


def test_imagenet_validation_folder_alone_with_a_label_file_of_indices(imagenet: Path, tmp_path: Path) -> None:
    labels = tmp_path / "caffe_val.txt"  # caffe's val.txt: FILE CLASS_INDEX (index among the sorted wnids)
    labels.write_text("".join(f"ILSVRC2012_val_0000000{n}.JPEG {cls}\n" for n, cls in ((1, 2), (2, 0), (3, 1))))
    out = tmp_path / "val_only"
    code = shards_main(["make", "images", str(imagenet / "val"), str(out), "--layout", "imagenet", "--label-file",
                        str(labels), "--no-progress"])
    assert code == 0
    assert not list(out.glob("train-*.tar"))  # a validation folder makes val shards
    val = {key.rsplit("_", 1)[1]: extras(s) for key, s in samples(out, "val").items()}
    assert {n: (c, t, f["wnid"]) for n, (c, t, f) in val.items()} == {
        "00000001": (2, "English springer", "n02102040"), "00000002": (0, "tench", "n01440764"),
        "00000003": (1, "goldfish", "n01443537")}
    (imagenet / "LOC_val_solution.csv").unlink()  # no label file anywhere: one line saying to pass one
    with pytest.raises(UsageError, match="no label file .* pass --label-file"):
        make_shards("images", imagenet / "val", tmp_path / "none", layout="imagenet", progress=False)


SPEECH = ["activated", "conf-getpin", "vm-login", "demo-thanks", "vm-repeat"]
UTTERANCES = [("19", "198"), ("19", "198"), ("19", "227"), ("26", "495"), ("26", "495")]


@pytest.fixture(scope="module")
def transcripts(shared_data: Path) -> dict[str, str]:
    files = json.loads((shared_data / "manifest.json").read_text())["files"]
    return {Path(f["path"]).stem: f["transcript"] for f in files if f["path"].startswith("speech/")}


def test_librispeech_speakers_and_transcripts(shared_data: Path, transcripts: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "LibriSpeech"
    subset = root / "dev-clean"
    lines: dict[Path, list[str]] = {}
    want = {}
    for n, (name, (speaker, chapter)) in enumerate(zip(SPEECH, UTTERANCES)):
        folder = subset / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        utterance = f"{speaker}-{chapter}-{n:04d}"
        (folder / f"{utterance}.flac").write_bytes((shared_data / "speech" / f"{name}.flac").read_bytes())
        text = transcripts[name].upper()
        lines.setdefault(folder / f"{speaker}-{chapter}.trans.txt", []).append(f"{utterance} {text}")
        want[utterance] = (int(speaker == "26"), text, speaker, chapter)
    for path, rows in lines.items():
        path.write_text("\n".join(rows) + "\n")
    (root / "SPEAKERS.TXT").write_text("; ID | SEX | SUBSET | MINUTES | NAME\n19 | F | dev-clean | 25.19 | Kara\n"
                                       "26 | M | dev-clean | 25.08 | Denny\n")
    assert detect(subset, "audio") == "librispeech"
    out = tmp_path / "out"
    assert shards_main(["make", "audio", str(subset), str(out), "--sample-rate", "16000", "--no-progress"]) == 0
    got = {}
    for sample in samples(out, "train").values():
        cls, txt, facts = extras(sample)
        got[facts["utterance"]] = (cls, txt, facts["speaker"], facts["chapter"])
        assert facts["gender"] == {"19": "F", "26": "M"}[facts["speaker"]] and facts["transcript"] == txt
    assert got == want
    assert json.loads((out / "manifest.json").read_text())["classes"] == ["19", "26"]


def test_libritts_normalised_transcripts(shared_data: Path, transcripts: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "LibriTTS"
    want = {}
    for n, (name, (speaker, chapter)) in enumerate(zip(SPEECH[:3], UTTERANCES[:3])):
        folder = root / "train-clean-100" / speaker / chapter
        folder.mkdir(parents=True, exist_ok=True)
        utterance = f"{speaker}_{chapter}_{n:06d}_000000"
        wave, rate = sf.read(shared_data / "speech" / f"{name}.flac")
        sf.write(folder / f"{utterance}.wav", wave, rate)
        (folder / f"{utterance}.normalized.txt").write_text(transcripts[name])
        (folder / f"{utterance}.original.txt").write_text(transcripts[name].upper())
        want[utterance] = (0, transcripts[name], transcripts[name].upper())
    (root / "speakers.tsv").write_text("READER\tGENDER\tSUBSET\tNAME\n19\tF\ttrain-clean-100\tKara\n")
    out = tmp_path / "out"
    manifest = make_shards("audio", root / "train-clean-100", out, sample_rate=16000, progress=False)
    assert manifest["layout"] == "libritts" and manifest["count"] == 3
    got = {}
    for sample in samples(out, "train").values():
        cls, txt, facts = extras(sample)
        got[facts["utterance"]] = (cls, txt, facts["original"])
        assert facts["subset"] == "train-clean-100" and facts["speaker"] == "19"
    assert got == want
    dm = ShardDataModule(train=str(out), modality="audio", sample_rate=16000, segment_samples=8000, batch_size=3,
                         shuffle_buffer=1, epoch_samples=3)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["txt"]) == sorted(t for _, t, _ in want.values()) and batch["cls"].tolist() == [0, 0, 0]


MESH_OPTIONS = ["--num-surface", "64", "--num-vol", "64", "--num-near", "64", "--no-progress"]


def export(shared_data: Path, name: str, target: Path) -> None:
    import trimesh

    target.parent.mkdir(parents=True, exist_ok=True)
    trimesh.load(shared_data / "meshes" / f"{name}.ply").export(target)


def test_shapenet_category_folders(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "ShapeNetCore.v2"
    models = {"02691156": ["icosahedron", "3torus"], "03001627": ["pinion"]}
    for synset, names in models.items():
        for n, name in enumerate(names):
            model = root / synset / f"{name}{n:02d}ab"
            export(shared_data, name, model / "models" / "model_normalized.obj")
            (model / "models" / "model_normalized.json").write_text("{}")  # beside it in v2; not a mesh
    (root / "taxonomy.json").write_text(json.dumps([
        {"synsetId": "02691156", "name": "airplane,aeroplane,plane", "children": [], "numInstances": 2},
        {"synsetId": "03001627", "name": "chair", "children": [], "numInstances": 1}]))
    assert detect(root, "meshes") == "shapenet"
    out = tmp_path / "out"
    assert shards_main(["make", "meshes", str(root), str(out), *MESH_OPTIONS]) == 0
    got = {}
    for sample in samples(out, "train").values():
        cls, txt, facts = extras(sample)
        got[facts["model_id"]] = (cls, txt, facts["synset"])
        assert "ply" in sample and facts["category"] == txt
    assert got == {"icosahedron00ab": (0, "airplane", "02691156"), "3torus01ab": (0, "airplane", "02691156"),
                   "pinion00ab": (1, "chair", "03001627")}


def test_objaverse_glbs_with_metadata_json(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "objaverse"
    uids = {"icosahedron": "a" * 32, "3torus": "b" * 32, "pinion": "c" * 32}
    for name, uid in uids.items():
        export(shared_data, name, root / "glbs" / "000-000" / f"{uid}.glb")
    annotations = {uids["icosahedron"]: {"name": "D20 die", "categories": [{"name": "games-toys"}],
                                         "tags": [{"name": "dice"}, {"name": "d20"}]},
                   uids["3torus"]: {"name": "Triple torus", "categories": [], "tags": []}}
    (root / "metadata").mkdir()
    (root / "metadata" / "000-000.json.gz").write_bytes(gzip.compress(json.dumps(annotations).encode()))
    (root / "lvis-annotations.json").write_text(json.dumps({"gear": [uids["pinion"]], "torus": [uids["3torus"]]}))
    assert detect(root, "meshes") == "objaverse"
    out = tmp_path / "out"
    assert shards_main(["make", "meshes", str(root), str(out), *MESH_OPTIONS]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layout"] == "objaverse" and manifest["classes"] == ["games-toys", "gear", "torus"]
    got = {}
    for sample in samples(out, "train").values():
        cls, txt, facts = extras(sample)
        got[facts["uid"]] = (cls, txt, facts["category"], facts["tags"])
    assert got == {uids["icosahedron"]: (0, "D20 die", "games-toys", ["dice", "d20"]),
                   uids["3torus"]: (2, "Triple torus", "torus", []),
                   uids["pinion"]: (1, "gear", "gear", [])}
    # a JSONL of {uid, category, name} given as --label-file replaces the metadata found in the folder
    listing = tmp_path / "objects.jsonl"
    listing.write_text("".join(json.dumps({"uid": uid, "category": "solid", "name": name}) + "\n"
                               for name, uid in uids.items() if name != "pinion"))
    out = tmp_path / "listed"
    assert shards_main(["make", "meshes", str(root), str(out), "--label-file", str(listing), *MESH_OPTIONS]) == 0
    got = {extras(sample)[2]["uid"]: extras(sample)[:2] for sample in samples(out, "train").values()}
    assert got == {uids["icosahedron"]: (0, "icosahedron"), uids["3torus"]: (0, "3torus"),
                   uids["pinion"]: (None, None)}  # an object the metadata does not name: no cls, no txt


def test_a_layout_of_another_kind_is_refused_and_plain_folders_stay_files(shared_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--layout imagenet does not fit audio"):
        make_shards("audio", shared_data / "speech", tmp_path / "x", layout="imagenet", progress=False)
    assert detect(shared_data / "images", "images") == "files"
    plain = tmp_path / "plain"  # class folders in train/ and val/ with some val.txt: not ImageNet
    for split in ("train", "val"):
        small_jpeg(shared_data / "images/coffee.png", plain / split / "cups" / "a.jpg")
    (plain / "val.txt").write_text("a.jpg 0\n")
    assert detect(plain, "images") == "files"
    assert detect(shared_data / "speech", "audio") == "files"
    assert detect(shared_data / "meshes", "meshes") == "files"
