"""Image tasks defined by data: a folder of labelled images plus a small task file.

Layout of the folder (the ImageFolder convention):

    <root>/train/<class>/*.png|jpg|jpeg|bmp
    <root>/test/<class>/...
    <root>/val/<class>/...        (optional: else 10% of train, by class, seeded)

The task file (JSON, optional: every field has a default) says what the folder
cannot:

    {"image_size": [3, 32, 32],            # C (1 grey, 3 RGB), H, W; default: the
                                           # first training image's
     "popularity": ["cat", "dog", ...],    # most to least popular; default: the
                                           # classes by training images, most first
     "cached": ["cat", "dog"],             # the cached model's classes; default:
                                           # the first third of popularity
     "private": [],                        # classes that must stay on the device
     "partitions": 3,                      # CacheNet partitions; default n/3, 2..5
     "network": {"widths": [64, 128, 256], # the full model's ResNet stages (stride 1,
                 "blocks": [2, 2, 2],      # then 2 each) and blocks per stage, its stem
                 "stem_width": 64,         # width (default widths[0]) and the students'
                 "student_width": 0.25,    # width factor (default 1/3), and the block
                 "block": "basic",         # (basic: residual; conv_pool: conv, max-pool,
                                           # conv; airbench: airbench's network, its
                                           # whitening stem: stem_width unused);
                 "cloud_tta": "none"},     # the full (cloud) program's test-time views:
                                           # none, mirror or mirror_translate
                                           # (knowcache/tta.py); default: the vision recipe
                                           # (models/nets.py FULL_CONFIGS), no views
     "training": {"optimizer": "sgd",      # adamw, sgd (Nesterov) or airbench (its
                                           # recipe: lr and weight_decay per 1024
                                           # examples, e.g. 11.5 and 0.0153), peak learning rate,
                  "lr": 0.4, "batch": 512, # batch, weight decay, label smoothing and
                  "weight_decay": 5e-4,    # epochs of the full model and of the students;
                  "label_smoothing": 0.2,  # each field left out keeps the vision
                  "epochs": 16,            # recipe's (build/pipeline.py); build-models'
                  "student_epochs": 10}}   # --epochs and --student-epochs win over these

`knowcache data images --folder DIR --task NAME` reads both, checks them, and
keeps the task (``task.json``, the resolved file) and its data (``data.npz``)
under ``<cache>/tasks/NAME/``, where ``knowcache.tasks.get`` finds the task and
every later stage (train, specialize, partition, export, bench, eval, serve) the
data. Programs take pixels in [0, 1] (``model_input``) and normalize inside.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from knowcache.atomic import replace_atomically
from knowcache.data import input_contract
from knowcache.data.dataset import Dataset, Split, cache_dir
from knowcache.data.input_contract import IMAGE_SUFFIXES
from knowcache.tta import VIEWS
from knowcache.tasks import ImageNetwork, ImageTraining, TaskSpec

RESERVED = ("kws", "vision")
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
VAL_SHARE = 0.1
FIELDS = {"image_size", "popularity", "cached", "cached_count", "private", "partitions",
          "network", "training"}


# Shipped models of an image task carry its resolved task file (``knowcache export``
# writes it), so a clone can bench, evaluate and serve them without the data.
SHIPPED = Path("models")
TASK_FILE = "task.json"


def task_dir(name: str) -> Path:
    return cache_dir() / "tasks" / name


def names() -> list[str]:
    found = set()
    for root in (cache_dir() / "tasks", SHIPPED):
        if root.is_dir():
            found |= {p.name for p in root.iterdir()
                      if NAME.match(p.name) and (p / TASK_FILE).is_file()}
    return sorted(found)


def task_file(name: str) -> Optional[Path]:
    """Where task ``name`` is defined: ingested (the cache), else shipped
    (``models/<name>/task.json`` under the working folder); None if neither."""
    if not NAME.match(name) or name in RESERVED:
        return None
    for path in (task_dir(name) / TASK_FILE, SHIPPED / name / TASK_FILE):
        if path.is_file():
            return path
    return None


def find(name: str) -> Optional[TaskSpec]:
    """The ingested or shipped task ``name``, or None."""
    path = task_file(name)
    if path is None:
        return None
    try:
        return spec_from_dict(name, json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a valid task file ({e}); ingest the task again with "
                         f"`knowcache data images --folder DIR --task {name}`") from e


def spec_from_dict(name: str, doc: dict) -> TaskSpec:
    net = doc.get("network")
    network = None if net is None else ImageNetwork(
        widths=tuple(net["widths"]), blocks=tuple(net["blocks"]), stem_width=net["stem_width"],
        student_width=net["student_width"], block=net.get("block", "basic"),
        cloud_tta=net.get("cloud_tta", "none"))
    training = doc.get("training")
    return TaskSpec(name=name, labels=tuple(doc["labels"]), popularity=tuple(doc["popularity"]),
                    cached_count=len(doc["cached"]), partitions=int(doc["partitions"]),
                    image_size=tuple(doc["image_size"]), private=tuple(doc.get("private", ())),
                    network=network,
                    training=None if training is None else ImageTraining(**training))


def load_data(name: str) -> Dataset:
    path = task_dir(name) / "data.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no data for image task {name!r} at {path}; ingest it with "
                                f"`knowcache data images --folder DIR --task {name}` (or "
                                f"give a folder of <class>/*.png|jpg with --data)")
    return Dataset.load(path)


def check_name(name: str) -> None:
    if name in RESERVED:
        raise ValueError(f"task name {name!r} is built in; choose another name for your images")
    if not NAME.match(name):
        raise ValueError(f"task name {name!r}: use 1-32 lowercase letters, digits, '-' or '_', "
                         "starting with a letter")


def _class_folders(split_dir: Path) -> list[Path]:
    loose = sorted(p.name for p in split_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise ValueError(f"{split_dir} has images at its top level ({loose[0]}, ...): move each "
                         f"into a folder named by its class, e.g. {split_dir}/<class>/")
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _read_split(split_dir: Path, labels: tuple[str, ...], image_size) -> Split:
    xs, ys, files = [], [], []
    for folder in _class_folders(split_dir):
        if folder.name not in labels:
            raise ValueError(f"{folder}: class {folder.name!r} is not in train/ ({', '.join(labels)}); "
                             "every split must use the training classes")
        images = _images(folder)
        if not images:
            raise ValueError(f"{folder} is an empty class: it holds no .png/.jpg/.jpeg/.bmp "
                             "images; add some or remove the folder")
        for f in images:
            xs.append(input_contract.image_pixels(f.read_bytes(), str(f), image_size))
            ys.append(labels.index(folder.name))
            files.append(f"{folder.name}/{f.name}")
    if not xs:
        raise ValueError(f"{split_dir} holds no class folders with images")
    return Split(np.stack(xs), np.array(ys, np.int16), np.array(files))


def _first_image_size(folder: Path) -> tuple[int, int, int]:
    from PIL import Image, UnidentifiedImageError
    f = _images(folder)[0]
    try:
        with Image.open(f) as im:
            channels = 1 if im.mode in ("1", "L", "I;16", "I", "F") else 3
            return channels, im.height, im.width
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{f}: not a readable image ({e})") from None


def _read_task_file(path: Optional[Path]) -> dict:
    if path is None:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no task file at {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a task file is a JSON object")
    unknown = sorted(set(doc) - FIELDS - {"name", "labels"})
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; a task file may set "
                         f"{', '.join(sorted(FIELDS))}")
    return doc


def _resolve(doc: dict, labels: tuple[str, ...], counts: np.ndarray, image_size,
             where: str) -> dict:
    """The task file's fields checked against the folder, defaults filled in."""
    def classes(field: str) -> list[str]:
        value = doc.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: {field} must be a list of class names")
        bad = [v for v in value if v not in labels]
        if bad:
            raise ValueError(f"{where}: {field} names {bad}, not classes of the folder "
                             f"({', '.join(labels)})")
        if len(set(value)) != len(value):
            raise ValueError(f"{where}: {field} lists a class twice")
        return value

    size = doc.get("image_size", list(image_size))
    if (not isinstance(size, list) or len(size) != 3 or size[0] not in (1, 3)
            or not all(isinstance(v, int) and 8 <= v <= 512 for v in size[1:])):
        raise ValueError(f"{where}: image_size must be [C, H, W] with C 1 or 3 and H, W in "
                         f"8..512, not {size}")
    popularity = classes("popularity")
    by_count = [labels[i] for i in np.argsort(-counts, kind="stable")]
    popularity += [c for c in by_count if c not in popularity]
    cached = classes("cached")
    if not cached:
        count = doc.get("cached_count", max(1, len(labels) // 3))
        if not isinstance(count, int) or not 1 <= count < len(labels):
            raise ValueError(f"{where}: cached_count must be 1..{len(labels) - 1}")
        cached = popularity[:count]
    private = classes("private")
    if len(set(cached) | set(private)) >= len(labels):
        raise ValueError(f"{where}: the cached and private classes cover every class; leave "
                         "some to the cloud")
    partitions = doc.get("partitions", min(5, max(2, len(labels) // 3)))
    if not isinstance(partitions, int) or not 2 <= partitions <= len(labels):
        raise ValueError(f"{where}: partitions must be 2..{len(labels)} (the number of classes)")
    # The cached set is the first classes of the popularity order: put it first.
    popularity = cached + [c for c in popularity if c not in cached]
    resolved = {"labels": list(labels), "image_size": size, "popularity": popularity,
                "cached": cached, "private": private, "partitions": partitions}
    if "network" in doc:
        resolved["network"] = _network(doc["network"], where)
    if "training" in doc:
        resolved["training"] = _training(doc["training"], where)
    return resolved


NETWORK_FIELDS = {"widths", "blocks", "stem_width", "student_width", "block", "cloud_tta"}
BLOCK_KINDS = ("basic", "conv_pool", "airbench")
# training field: (type, low, high) of its value
TRAINING_FIELDS = {"optimizer": (str, None, None), "lr": (float, 1e-6, 100.0),
                   "batch": (int, 1, 8192), "weight_decay": (float, 0.0, 1.0),
                   "label_smoothing": (float, 0.0, 0.5), "epochs": (int, 1, 1000),
                   "student_epochs": (int, 1, 1000)}
OPTIMIZERS = ("adamw", "sgd", "airbench")


def _training(doc, where: str) -> dict:
    """A task file's ``training``, checked; only the fields it sets."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: training must be an object with some of "
                         f"{', '.join(TRAINING_FIELDS)}")
    unknown = sorted(set(doc) - set(TRAINING_FIELDS))
    if unknown:
        raise ValueError(f"{where}: training has unknown fields {unknown}; it may set "
                         f"{', '.join(TRAINING_FIELDS)}")
    for key, value in doc.items():
        kind, low, high = TRAINING_FIELDS[key]
        if key == "optimizer":
            if value not in OPTIMIZERS:
                raise ValueError(f"{where}: training.optimizer must be one of "
                                 f"{', '.join(OPTIMIZERS)}, not {value!r}")
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not isinstance(value, int)) or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"{where}: training.{key} must be {what} in {low}..{high}, "
                             f"not {value!r}")
    return dict(doc)


def _network(net, where: str) -> dict:
    """A task file's ``network``, checked, defaults filled in."""
    if not isinstance(net, dict):
        raise ValueError(f"{where}: network must be an object with {sorted(NETWORK_FIELDS)}")
    unknown = sorted(set(net) - NETWORK_FIELDS)
    if unknown:
        raise ValueError(f"{where}: network has unknown fields {unknown}; it may set "
                         f"{', '.join(sorted(NETWORK_FIELDS))}")
    widths, blocks = net.get("widths"), net.get("blocks")
    if (not isinstance(widths, list) or not 1 <= len(widths) <= 5
            or not all(isinstance(w, int) and 4 <= w <= 1024 for w in widths)):
        raise ValueError(f"{where}: network.widths must be 1 to 5 stage widths in 4..1024, "
                         f"not {widths}")
    blocks = [1] * len(widths) if blocks is None else blocks
    if (not isinstance(blocks, list) or len(blocks) != len(widths)
            or not all(isinstance(b, int) and 1 <= b <= 8 for b in blocks)):
        raise ValueError(f"{where}: network.blocks must give 1..8 blocks for each of the "
                         f"{len(widths)} stages, not {blocks}")
    stem = net.get("stem_width", widths[0])
    if not isinstance(stem, int) or not 4 <= stem <= 1024:
        raise ValueError(f"{where}: network.stem_width must be in 4..1024, not {stem}")
    factor = net.get("student_width", 1 / 3)
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor <= 1:
        raise ValueError(f"{where}: network.student_width must be in (0, 1], not {factor}")
    block = net.get("block", "basic")
    if block not in BLOCK_KINDS:
        raise ValueError(f"{where}: network.block must be one of {', '.join(BLOCK_KINDS)}, "
                         f"not {block!r}")
    tta = net.get("cloud_tta", "none")
    if tta not in VIEWS:
        raise ValueError(f"{where}: network.cloud_tta must be one of {', '.join(VIEWS)}, "
                         f"not {tta!r}")
    return {"widths": widths, "blocks": blocks, "stem_width": stem,
            "student_width": float(factor), "block": block, "cloud_tta": tta}


def ingest(root: str | Path, name: str, task_file: Optional[Path] = None,
           seed: int = 0) -> tuple[TaskSpec, Dataset]:
    """Reads and checks ``root`` (and ``task_file``), keeps the task and its data in
    the cache; returns them. Nothing is written unless every check passes."""
    check_name(name)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ValueError(f"{root} has no {split}/ folder: an image task needs "
                             f"{root}/train/<class>/*.png|jpg and {root}/test/<class>/...")
    doc = _read_task_file(task_file)
    class_dirs = _class_folders(root / "train")
    labels = tuple(p.name for p in class_dirs)
    if len(labels) < 2:
        raise ValueError(f"{root}/train has {len(labels)} class folder(s) "
                         f"({', '.join(labels) or 'none'}): a task needs at least 2 classes")
    if "labels" in doc and list(doc["labels"]) != list(labels):
        raise ValueError(f"{task_file}: labels {doc['labels']} differ from the class folders "
                         f"of {root}/train ({', '.join(labels)}); drop labels or match them")
    empty = [p for p in class_dirs if not _images(p)]
    if empty:
        raise ValueError(f"{empty[0]} is an empty class: it holds no .png/.jpg/.jpeg/.bmp "
                         "images; add some or remove the folder")
    counts = np.array([len(_images(p)) for p in class_dirs])
    resolved = _resolve(doc, labels, counts, _first_image_size(class_dirs[0]),
                        str(task_file or root))
    size = tuple(resolved["image_size"])
    train = _read_split(root / "train", labels, size)
    test = _read_split(root / "test", labels, size)
    if (root / "val").is_dir():
        val = _read_split(root / "val", labels, size)
        val_from = "val/"
    else:
        train, val = _carve_val(train, seed)
        val_from = f"{VAL_SHARE:.0%} of train/ by class (seed {seed})"
    spec = spec_from_dict(name, resolved)
    ds = Dataset(name, labels, train, val, test, f"image folder {root.resolve()}",
                 {"folder": str(root.resolve()), "val": val_from, "task": resolved})
    out = task_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    ds.save(out / "data.npz")
    replace_atomically(out / TASK_FILE,
                       lambda tmp: Path(tmp).write_text(json.dumps(resolved, indent=2) + "\n"))
    return spec, ds


def _carve_val(train: Split, seed: int) -> tuple[Split, Split]:
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in np.unique(train.y):
        idx = np.flatnonzero(train.y == c)
        take = int(round(len(idx) * VAL_SHARE))
        if take == 0 or take >= len(idx):
            continue
        val_idx.extend(rng.permutation(idx)[:take].tolist())
    if not val_idx:
        raise ValueError("too few training images to hold any out for validation: add a "
                         "val/ folder or more images per class")
    mask = np.zeros(len(train), bool)
    mask[val_idx] = True
    return train.subset(np.flatnonzero(~mask)), train.subset(np.flatnonzero(mask))
