"""Judge networks: the segmenter of the FCN-score and StarGAN's attribute classifier, trained on
real images, saved in one file format and loaded back to score translations.

A judge file is a plain dict written atomically: {"format": FORMAT, "state_dict": the network's
weights, "meta": plain values}, so `torch.load(weights_only=True)` reads it and loading never
runs pickled code. The meta says how to rebuild the network and what its numbers mean:

    task          "segmentation" | "attributes"
    arch          a timm model name, or "tiny"
    num_classes   (segmentation) and "classes", the class names by id
    attributes    (attributes) the label names, one logit each
    image_size    [H, W] of the images it was trained on; normalisation: the pixel mapping
    data          the data config it was trained on (format, root, sizes, ...), and "recipe"
    steps, batch_size, lr, seed
    heldout       its scores on held-out real images (split, images, and the scores)

`translate-judge` (cli.py) runs `train_judge`: build the training split with build_dataset,
train, score the held-out real images (segmentation: the FCN-score of the real photos, the
papers' upper-bound row; attributes: per-attribute accuracy), print the table, save.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from translate import config
from translate.config import DataConfig, JudgeConfig, RunConfig, RuntimeConfig
from translate.errors import UserError
from translate.train.checkpoint import first_sentence, load_state_file, save_atomically

FORMAT = "translate-judge-v1"
TASKS = ("segmentation", "attributes")
HELDOUT_SPLITS = ("test", "holdout")
NORMALISATION = "RGB, (pixel / 255 - 0.5) / 0.5, in [-1, 1]"
SEGMENTATION_FORMATS = ("scenes", "cityscapes")  # the formats that give photos with class maps


def build_judge(meta: dict[str, Any]) -> nn.Module:
    """The (untrained) network a judge's meta describes."""
    if meta["task"] == "segmentation":
        from translate.eval.fcn_score import build_segmenter
        return build_segmenter(meta["arch"], int(meta["num_classes"]))
    from translate.eval.attributes import build_classifier
    return build_classifier(meta["arch"], len(meta["attributes"]))


def save_judge(net: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write `net`'s weights and `meta` to `path` (a temporary file renamed into place)."""
    if meta.get("task") not in TASKS:
        raise ValueError(f"meta['task'] must be one of {TASKS}, got {meta.get('task')!r}")
    need = ("arch", "num_classes") if meta["task"] == "segmentation" else ("arch", "attributes")
    missing = [k for k in need if k not in meta]
    if missing:
        raise ValueError(f"a {meta['task']} judge's meta needs {', '.join(missing)}")
    _check_plain(meta, "meta")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    save_atomically({"format": FORMAT, "state_dict": state, "meta": meta}, path)
    return path


def load_judge(path: str | Path, task: str | None = None,
               map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The judge network in `path` (in eval mode, weights loaded) and its meta. A missing, corrupt
    or foreign file, or a judge of another `task` than asked for, is a one-line UserError."""
    loaded = load_state_file(Path(path), map_location)
    if not isinstance(loaded, dict) or loaded.get("format") != FORMAT:
        raise UserError(f"{path} is not a translate judge file; train one with translate-judge "
                        f"task=segmentation|attributes recipe=NAME output={path}")
    meta = loaded.get("meta")
    if not isinstance(meta, dict) or meta.get("task") not in TASKS:
        raise UserError(f"{path} is a judge file without a valid meta (task must be one of {', '.join(TASKS)}); "
                        f"it was not written by translate-judge, train it again")
    if task and meta["task"] != task:
        raise UserError(f"{path} is a {meta['task']} judge, not a {task} one; pass a judge trained with "
                        f"translate-judge task={task}")
    try:
        net = build_judge(meta)
        net.load_state_dict(loaded["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"{path}: the weights do not fit its {meta['task']} judge (arch={meta.get('arch')}; "
                        f"{first_sentence(e)}); train it again with translate-judge") from None
    return net.eval(), meta


def _check_plain(value: Any, where: str) -> None:
    """Only what torch.load(weights_only=True) reads back: str, numbers, bool, None, lists, dicts."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-text key {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise ValueError(f"{where} is a {type(value).__name__}; a judge's meta holds only plain values "
                         f"(text, numbers, lists, dicts)")


# ---------------------------------------------------------------------------------------------
# translate-judge


def judge_config(args: list[str]) -> JudgeConfig:
    """The options of `translate-judge key=value ...`: recipe=NAME's [data] section under the
    data.* keys given, each typed and checked by the config."""
    values = config.parse_overrides(args)
    recipe = values.get("recipe")
    base: dict[str, Any] = {}
    if isinstance(recipe, str) and recipe:
        base = {"data": config.read_toml(config.find_recipe(recipe)).get("data", {})}
    cfg = config.build(JudgeConfig, config.merge(base, values))
    config.validate(RunConfig(data=cfg.data))  # the data section's choices and sizes, as for training
    if cfg.task not in TASKS:
        close = difflib.get_close_matches(cfg.task, TASKS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"task={cfg.task} is not one of {', '.join(TASKS)}{hint}")
    if cfg.heldout not in HELDOUT_SPLITS:
        raise UserError(f"heldout={cfg.heldout} is not one of {', '.join(HELDOUT_SPLITS)}")
    if cfg.heldout == "holdout" and not cfg.data.holdout:
        raise UserError("heldout=holdout needs data.holdout=N, the number of training images set apart")
    for key in ("steps", "batch_size", "lr"):
        if getattr(cfg, key) <= 0:
            raise UserError(f"{key} must be greater than 0, got {getattr(cfg, key)}")
    for key in ("heldout_max", "log_every", "threads"):
        if getattr(cfg, key) < 0:
            raise UserError(f"{key} must not be negative, got {getattr(cfg, key)}")
    if not cfg.output:
        raise UserError("output= is required: the judge file to write, e.g. output=judges/scenes_fcn.pt")
    if Path(cfg.output).is_dir():
        raise UserError(f"output={cfg.output} is a folder; give a file name, e.g. output={cfg.output}/judge.pt")
    _check_arch(cfg.arch, cfg.task)
    if cfg.task == "segmentation":
        # The judge reads the photo side: "A" in the scenes and Cityscapes formats, whatever
        # direction a translation recipe trains in.
        cfg.data = dataclasses.replace(cfg.data, direction="AtoB")
    return cfg


def _check_arch(arch: str, task: str) -> None:
    """A timm name that exists and, for a segmenter, gives feature maps (features_only)."""
    if arch == "tiny":
        return
    import timm
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"arch={arch} is not a timm model; {hint}use e.g. arch=resnet18, or arch=tiny")
    if task == "segmentation":
        try:
            timm.create_model(arch, features_only=True, pretrained=False)
        except Exception as e:  # timm raises several types for models without feature maps
            raise UserError(f"arch={arch} cannot serve as a segmentation backbone ({first_sentence(e)}); "
                            f"use e.g. arch=resnet18") from None


def class_names(data: DataConfig) -> list[str]:
    """The classes of a format that gives photos with class maps, by id."""
    if data.format == "scenes":
        from translate.data.scenes import SCENE_CLASSES
        return list(SCENE_CLASSES)
    if data.format == "cityscapes":
        from translate.data.cityscapes import CITYSCAPES_LABELS, TRAINID_COLORS
        # The 19 train ids; the others are 255 (ignored) or -1 (license plate, never drawn).
        by_id = {lb.train_id: lb.name for lb in CITYSCAPES_LABELS if 0 <= lb.train_id < len(TRAINID_COLORS)}
        return [by_id[i] for i in range(len(TRAINID_COLORS))]
    raise UserError(f"data.format={data.format} gives no class maps; a segmentation judge trains on "
                    f"{' or '.join(SEGMENTATION_FORMATS)} (photos with their labels)")


def train_judge(cfg: JudgeConfig) -> tuple[Path, pd.DataFrame]:
    """Train the judge `cfg` asks for, score it on held-out real images, save it: its path and the
    table of held-out scores."""
    from translate.data import build_dataset, domain_labels
    from translate.train.runtime import Runtime

    device = Runtime.setup(RuntimeConfig(device=cfg.device, threads=cfg.threads)).device
    data = cfg.data
    meta: dict[str, Any] = {"task": cfg.task, "arch": cfg.arch, "normalisation": NORMALISATION,
                            "recipe": cfg.recipe, "data": dataclasses.asdict(data), "steps": cfg.steps,
                            "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed}
    split_name = f"{cfg.heldout} (Cityscapes: val)" if data.format == "cityscapes" and cfg.heldout == "test" \
        else cfg.heldout
    if cfg.task == "segmentation":
        from translate.eval.fcn_score import score_real_photos, train_segmenter
        names = class_names(data)
        train_set = build_dataset(data, "train", paired=True, train=True)
        heldout = build_dataset(data, cfg.heldout, paired=True, train=False)
        net = train_segmenter(train_set, len(names), cfg.steps, cfg.batch_size, arch=cfg.arch, lr=cfg.lr,
                              seed=cfg.seed, device=device, log_every=cfg.log_every, num_workers=data.num_workers)
        scores, count = score_real_photos(net, heldout, len(names), batch_size=cfg.batch_size, device=device,
                                          limit=cfg.heldout_max, num_workers=data.num_workers)
        meta.update(num_classes=len(names), classes=names, image_size=list(heldout[0]["A"].shape[-2:]),
                    heldout={"split": cfg.heldout, "images": count, **scores})
        table = pd.DataFrame([{"photos": f"real, held-out {split_name}", **scores, "images": count}])
    else:
        from translate.eval.attributes import real_attribute_accuracy, train_attribute_classifier
        if data.format == "joint":
            raise UserError("data.format=joint: train one attribute judge per dataset (data.format=celeba, ...)")
        names = list(domain_labels(data).names)
        train_set = build_dataset(data, "train", paired=False, train=True)
        heldout = build_dataset(data, cfg.heldout, paired=False, train=False)
        net = train_attribute_classifier(train_set, len(names), cfg.steps, cfg.batch_size, arch=cfg.arch,
                                         seed=cfg.seed, lr=cfg.lr, device=device, log_every=cfg.log_every)
        table = real_attribute_accuracy(net, heldout, names, batch_size=cfg.batch_size, device=device,
                                        limit=cfg.heldout_max)
        meta.update(attributes=names, image_size=list(heldout[0]["image"].shape[-2:]),
                    heldout={"split": cfg.heldout, "images": int(table["images"].iloc[0]),
                             "mean_accuracy": float(table["accuracy"].mean()),
                             "accuracy": dict(zip(names, map(float, table["accuracy"]), strict=True))})
    return save_judge(net, cfg.output, meta), table

