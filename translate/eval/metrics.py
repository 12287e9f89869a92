"""The metric registry: name -> constructor, as timm's model registry.

Every metric is an accumulator. The evaluation loop (evaluate.py) translates a split batch by
batch and hands each metric what it declared it needs:

- `update_real(images)`: real images of the target domain, once per image. For two domains that
  is the other side of the batch (B for AtoB); for StarGAN, every real test image (all domains).
  Called only for metrics with `needs_real = True` (FID, KID).
- `update(batch)`: one `Translated` batch: the inputs, their translations, and what the data
  knows about them (the paired truth, the inputs' class maps, StarGAN's target labels).

`compute()` returns {column: value}; `columns` says, for the columns known in advance, whether
higher is better (`eval.best` picks one of them). `requires` names the `Translated` fields a
metric cannot do without, so a metric that does not fit the data fails before any work with a
one-line error.

Registering a metric: decorate a class with `@register("name")`. Its constructor takes the
`MetricContext` (the evaluation's config, device, data and label names); expensive shared parts
(the FID feature extractor, the judges) are built once per context with `context.shared(...)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from translate.config import EvalConfig
from translate.errors import UserError


@dataclass
class Translated:
    """One batch of translations. Images are Bx3xHxW in [-1, 1]."""

    source: Tensor  # the inputs
    fake: Tensor  # their translations
    target: Tensor | None = None  # the true output of each input (paired data only)
    source_classes: Tensor | None = None  # int64 BxHxW class map of each input's scene (255: ignore)
    target_label: Tensor | None = None  # StarGAN: the label each input was translated to
    attribute: int | None = None  # StarGAN: which attribute's target this batch is (target_labels' order)


@dataclass
class MetricContext:
    """What a metric may consult while it is built: the evaluation's options and its data."""

    eval: EvalConfig
    device: torch.device
    data_format: str = ""  # data.format of the evaluated split (label colours depend on it)
    label_names: list[str] = field(default_factory=list)  # StarGAN: what each label entry means
    _cache: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        """One object per context (an extractor, a judge network), built on first use."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


class Metric:
    name: ClassVar[str] = ""
    columns: ClassVar[dict[str, bool]] = {}  # column -> whether higher is better
    needs_real: ClassVar[bool] = False  # takes update_real(target-domain real images)
    requires: ClassVar[tuple[str, ...]] = ()  # Translated fields it cannot do without
    requirement: ClassVar[str] = ""  # what the data must give, for the error message
    stargan: ClassVar[bool | None] = None  # True: StarGAN only; False: two-domain methods only

    def __init__(self, context: MetricContext):
        self.context = context

    def update_real(self, images: Tensor) -> None:
        pass

    def update(self, batch: Translated) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


METRICS: dict[str, type[Metric]] = {}
# Metrics of their own modules, imported on first use (labels, fcn and attributes are below)
LAZY: dict[str, str] = {"fid": "translate.eval.fid", "kid": "translate.eval.fid", "paired": "translate.eval.paired"}


def register(name: str) -> Callable[[type[Metric]], type[Metric]]:
    def add(cls: type[Metric]) -> type[Metric]:
        cls.name = name
        METRICS[name] = cls
        return cls
    return add


def metric_names() -> list[str]:
    return sorted(set(METRICS) | set(LAZY))


def metric_class(name: str) -> type[Metric]:
    if name not in METRICS and name in LAZY:
        import importlib
        importlib.import_module(LAZY[name])
    if name not in METRICS:
        close = difflib.get_close_matches(name, metric_names(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown metric {name}; {hint}valid metrics: {', '.join(metric_names())}")
    return METRICS[name]


def check_metrics(names: list[str], stargan: bool, has: set[str]) -> list[type[Metric]]:
    """The classes of `names`, each checked against the method and the fields the data gives."""
    if not names:
        raise UserError(f"eval.metrics is empty; name at least one of {', '.join(metric_names())}")
    classes = []
    for name in names:
        cls = metric_class(name)
        if cls.stargan is not None and cls.stargan != stargan:
            what = "StarGAN models" if cls.stargan else "two-domain models (pix2pix, CycleGAN)"
            raise UserError(f"metric {name} is for {what}; choose others from {', '.join(metric_names())}")
        missing = [r for r in cls.requires if r not in has]
        if missing:
            raise UserError(f"metric {name} needs {cls.requirement}, which this data does not give; "
                            f"drop it from eval.metrics or evaluate on such data")
        classes.append(cls)
    return classes


def higher_is_better(column: str, names: list[str]) -> bool:
    """Whether a larger value of `column` (a column of one of the metrics `names`) is better."""
    known: dict[str, bool] = {}
    for name in names:
        known.update(metric_class(name).columns)
    if column not in known:
        raise UserError(f"eval.best={column} is not a column of the metrics {', '.join(names)}; "
                        f"choose one of {', '.join(known)}")
    return known[column]


def build_metrics(names: list[str], context: MetricContext) -> list[Metric]:
    return [metric_class(name)(context) for name in names]


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] images to uint8 [0, 255] as a saved PNG holds them (truncated, as the official
    tensor2im and translate-infer write them): FID is defined on image files."""
    return ((images.detach().float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)


# Keyword arguments for every torchmetrics metric: they gather their states from all processes on
# compute() whenever torch.distributed is initialised, but translate evaluates in one process
# (rank 0 of a torchrun job, the others waiting at a barrier), where that gather would hang.
LOCAL = {"sync_on_compute": False}


def to_unit(images: Tensor) -> Tensor:
    """[-1, 1] images to [0, 1], the range the paired metrics are given in."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Label maps and judges: thin adapters over segmentation.py, fcn_score.py, attributes.py.


def label_colours(data_format: str) -> tuple[Callable[[Tensor], Tensor], int]:
    """How a dataset's label maps are read back as classes: (colours -> class map, classes)."""
    if data_format == "scenes":
        from translate.data.scenes import SCENE_PALETTE, colors_to_classes
        return colors_to_classes, len(SCENE_PALETTE)
    if data_format == "cityscapes":
        from translate.data.cityscapes import TRAINID_COLORS, colors_to_trainids
        return colors_to_trainids, len(TRAINID_COLORS)
    raise UserError(f"metric labels reads label maps in the colours of the scenes or cityscapes formats, "
                    f"not data.format={data_format}")


@register("labels")
class Labels(Metric):
    """Photo -> label map: the translations' colours mapped back to classes (nearest colour) and
    scored against the photos' true classes (segmentation.py: pixel / class accuracy, class IoU)."""

    columns = {"labels_pixel_accuracy": True, "labels_class_accuracy": True, "labels_class_iou": True}
    requires = ("source_classes",)
    requirement = "the inputs' true class maps (data.format=scenes or cityscapes)"
    stargan = False

    def __init__(self, context: MetricContext):
        super().__init__(context)
        self.to_classes, self.num_classes = label_colours(context.data_format)
        self.confusion = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.long)

    def update(self, batch: Translated) -> None:
        from translate.eval.segmentation import confusion_matrix
        predicted = self.to_classes(batch.fake).cpu()
        self.confusion += confusion_matrix(predicted, batch.source_classes.cpu(), self.num_classes)

    def compute(self) -> dict[str, float]:
        from translate.eval.segmentation import label_scores
        return {f"labels_{k}": v for k, v in label_scores(self.confusion).items()}


def load_checked_judge(path: str, key: str, task: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A judge network saved by translate/eval/judges.py, checked to be of `task`, in eval mode."""
    if not path:
        raise UserError(f"this metric needs {key}=PATH, a {task} judge trained on real images "
                        f"(see the README's Evaluation section)")
    from translate.eval.judges import load_judge
    net, meta = load_judge(path, task=task)
    return net.to(device).eval(), meta


@register("fcn")
class FCN(Metric):
    """Labels -> photo: the FCN-score of the pix2pix and CycleGAN papers. A segmentation judge
    (eval.segmenter) labels the translated photos; its maps are scored against the inputs' classes."""

    columns = {"fcn_pixel_accuracy": True, "fcn_class_accuracy": True, "fcn_class_iou": True}
    requires = ("source_classes",)
    requirement = "the inputs' true class maps (data.format=scenes or cityscapes)"
    stargan = False

    def __init__(self, context: MetricContext):
        super().__init__(context)
        from translate.eval.fcn_score import FCNScore
        e = context.eval
        net, meta = context.shared("segmenter", lambda: load_checked_judge(
            e.segmenter, "eval.segmenter", "segmentation", context.device))
        size = meta.get("image_size") or [None]  # photos are resized to what the judge was trained on
        self.score = FCNScore(net, int(meta["num_classes"]), context.device, image_size=size[0])

    @torch.no_grad()
    def update(self, batch: Translated) -> None:
        self.score.update(batch.fake, batch.source_classes)

    def compute(self) -> dict[str, float]:
        return {f"fcn_{k}": float(v) for k, v in self.score.compute().items()}


@register("attributes")
class Attributes(Metric):
    """StarGAN's attribute-classification accuracy: per attribute, how often an attribute judge
    (eval.classifier) reads that attribute of G(x, c_trg) as its target value, for the targets of
    the official test (attributes.target_labels)."""

    columns = {"attr_mean": True}
    requires = ("target_label",)
    requirement = "StarGAN target labels"
    stargan = True

    def __init__(self, context: MetricContext):
        super().__init__(context)
        e = context.eval
        self.classifier, meta = context.shared("classifier", lambda: load_checked_judge(
            e.classifier, "eval.classifier", "attributes", context.device))
        names = list(meta.get("attributes", []))
        if names != list(context.label_names):
            raise UserError(f"eval.classifier judges [{', '.join(names)}] but the model's labels are "
                            f"[{', '.join(context.label_names)}]; give a classifier of the same attributes in order")
        self.found = torch.zeros(len(names))
        self.count = torch.zeros(len(names))

    @torch.no_grad()
    def update(self, batch: Translated) -> None:
        i = batch.attribute
        predicted = (self.classifier(batch.fake)[:, i] > 0).float()  # the rule of attributes.attribute_accuracy
        self.found[i] += float((predicted == batch.target_label[:, i]).float().sum())
        self.count[i] += len(predicted)

    def compute(self) -> dict[str, float]:
        rates = (self.found / self.count.clamp(min=1)).tolist()
        scores = {f"attr_{name}": r for name, r in zip(self.context.label_names, rates, strict=True)}
        return {**scores, "attr_mean": sum(rates) / len(rates)}
