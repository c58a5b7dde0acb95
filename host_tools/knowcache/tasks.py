"""The tasks knowcache builds models for, and what is declared about them.

A task fixes its label set, the input the device feeds, the popularity
profile that decides which classes the cache specializes to, and how many
CacheNet partitions its classes are split into by default.

Two are built in (``kws``, ``vision``); image tasks are defined by data:
`knowcache data images --folder DIR --task NAME` ingests an image folder and
writes the task's file (``image_tasks.py``), which ``get`` then finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# Speech Commands v2: the 35 words, plus a silence/background-noise class.
KWS_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one",
    "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow",
    "yes", "zero",
)
SILENCE = "_silence_"
FASHION_MNIST_LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                        "sneaker", "bag", "ankle-boot")
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                  "truck")
OTHER = "other"


@dataclass(frozen=True)
class ImageNetwork:
    """An image task's own network size (a task file's ``network``): the full
    model's ResNet stages, and the width factor of its students."""
    widths: tuple[int, ...]
    blocks: tuple[int, ...]
    stem_width: int
    student_width: float
    block: str = "basic"          # models.resnet.BLOCKS
    cloud_tta: str = "none"       # the full program's test-time views: knowcache.tta.VIEWS


@dataclass(frozen=True)
class ImageTraining:
    """An image task's own training recipe (a task file's ``training``); fields
    left out keep the vision recipe's (build.training.FitConfig, pipeline)."""
    optimizer: Optional[str] = None
    lr: Optional[float] = None
    batch: Optional[int] = None
    weight_decay: Optional[float] = None
    label_smoothing: Optional[float] = None
    epochs: Optional[int] = None            # the full model's
    student_epochs: Optional[int] = None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...]
    # Classes from most to least popular; the cache specializes to the first
    # `cached_count` of them (plus any private classes).
    popularity: tuple[str, ...]
    cached_count: int
    partitions: int
    sample_rate: int = 0
    samples: int = 0
    image_size: tuple[int, int, int] = (0, 0, 0)
    private: tuple[str, ...] = field(default_factory=tuple)
    network: Optional[ImageNetwork] = None     # image tasks: None takes the vision recipe's
    training: Optional[ImageTraining] = None   # image tasks: None takes the vision recipe's

    @property
    def kind(self) -> str:
        """"audio" (a waveform) or "image" (pixels)."""
        return "audio" if self.samples else "image"

    @property
    def input_shape(self) -> list[int]:
        if self.kind == "audio":
            return [1, self.samples]
        return [1, *self.image_size]

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(f"unknown {self.name} class {label!r}; known: "
                             f"{', '.join(self.labels)}") from None

    def cached_classes(self, classes: tuple[str, ...] | None = None,
                       private: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The cached set: a given list, or the most popular; private classes added."""
        chosen = list(classes) if classes else list(self.popularity[: self.cached_count])
        for c in (*self.private, *private):
            if c not in chosen:
                chosen.append(c)
        for c in chosen:
            self.index(c)
        if len(set(chosen)) != len(chosen):
            raise ValueError("cached classes are listed twice")
        if len(chosen) >= len(self.labels):
            raise ValueError("a cached model must leave some classes to the cloud")
        return tuple(sorted(chosen, key=self.index))


# Voice assistants' core commands are the popular ones (the 10 Google keyword
# spotting commands), then digits, then the rest.
_KWS_POPULARITY = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                   "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                   "backward", "forward", "follow", "learn", "visual", "bed", "bird", "cat", "dog",
                   "happy", "house", "marvin", "sheila", "tree", "wow", SILENCE)

KWS = TaskSpec(name="kws", labels=(*KWS_WORDS, SILENCE), popularity=_KWS_POPULARITY,
               cached_count=10, partitions=4, sample_rate=16000, samples=16000)

VISION = TaskSpec(name="vision", labels=FASHION_MNIST_LABELS,
                  popularity=("sneaker", "t-shirt", "trouser", "bag", "dress", "pullover", "coat",
                              "shirt", "sandal", "ankle-boot"),
                  cached_count=4, partitions=3, image_size=(1, 28, 28))

VISION_CIFAR10 = TaskSpec(name="vision", labels=CIFAR10_LABELS,
                          popularity=("automobile", "truck", "dog", "cat", "bird", "airplane",
                                      "horse", "ship", "deer", "frog"),
                          cached_count=4, partitions=3, image_size=(3, 32, 32))

TASKS = {"kws": KWS, "vision": VISION}


def get(name: str) -> TaskSpec:
    """A built-in task, or an image task ingested by `knowcache data images`."""
    if name in TASKS:
        return TASKS[name]
    from knowcache.data import image_tasks
    spec = image_tasks.find(name)
    if spec is None:
        known = [*TASKS, *image_tasks.names()]
        raise ValueError(f"unknown task {name!r}; known: {', '.join(known)} (an image task is "
                         f"created by `knowcache data images --folder DIR --task {name}`)")
    return spec


def family(name: str) -> str:
    """Which built-in task's recipe (networks, epochs) a task uses: kws, or vision
    for every image task."""
    return "kws" if name == "kws" else "vision"
