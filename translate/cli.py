"""Command-line entry points. Every `UserError` becomes one line on stderr and exit status 2."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from translate.errors import UserError


def one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def user_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            click.echo(f"error: {one_line(e)}", err=True)
            sys.exit(2)
    return wrapper


def split_args(args: tuple[str, ...], special: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """`key=value` arguments: the command's own keys apart, the rest as config overrides."""
    own, rest = {}, []
    for arg in args:
        key = arg.split("=", 1)[0]
        if key in special:
            if "=" not in arg or not arg.split("=", 1)[1]:
                raise UserError(f"{key} needs a value, e.g. {key}=...")
            own[key] = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return own, rest


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.option("--list", "list_recipes", is_flag=True, help="List the recipes and exit.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def train(list_recipes: bool, print_config: bool, args: tuple[str, ...]) -> None:
    """Train a model: translate-train recipe=NAME [key.sub=value ...] | resume=runs/NAME [key=value ...]

    A recipe is a name from --list or a path to a .toml file; overrides are typed by the config
    (e.g. train.lr=0.0001 data.root=/data/cityscapes runtime.precision=bf16).
    """
    from translate import config

    if list_recipes:
        for name, path in config.list_recipes().items():
            click.echo(f"{name:24s} {config.recipe_summary(path)}")
        return
    own, overrides = split_args(args, ("recipe", "resume"))
    if "recipe" in own and "resume" in own:
        raise UserError("give either recipe=NAME (a new run) or resume=runs/NAME (continue one), not both")
    from translate.train.loop import load_run_config, train as run_training

    if "resume" in own:
        resume_dir = Path(own["resume"])
        cfg, name = load_run_config(resume_dir, overrides), resume_dir.name
    else:
        if "recipe" not in own and not overrides and not print_config:
            raise UserError("no recipe given; run translate-train recipe=cyclegan_synthetic "
                            "(translate-train --list shows all recipes)")
        resume_dir = None
        cfg, name = config.load(own.get("recipe"), overrides)
    if print_config:
        click.echo(config.to_toml(cfg), nl=False)
        return
    run_training(cfg, name, resume_dir)


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def infer(args: tuple[str, ...]) -> None:
    """Translate a folder: translate-infer checkpoint=PATH input=DIR output=DIR [direction=AtoB size=256 ...]

    The checkpoint is a translate checkpoint (runs/NAME/checkpoints/step_*.pt) or an official
    CycleGAN/pix2pix generator (*_net_G_A.pth, *_net_G.pth) or StarGAN generator (N-G.ckpt); the
    architecture is read from it. StarGAN needs target=NAME,... (and for N-G.ckpt attributes=...);
    target=all writes the official test row over every target (attributes: with labels=FILE).
    """
    from translate import config
    from translate.infer import translate_folder

    cfg = config.build(config.InferConfig, config.parse_overrides(list(args)))
    count, out = translate_folder(cfg)
    click.echo(f"translated {count} image(s) into {out}")


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def evaluate(args: tuple[str, ...]) -> None:
    """Score a model: translate-eval run=runs/NAME | checkpoint=PATH [split=test metrics=fid,kid,paired ...]

    Translates the split with the run's newest checkpoint (or the given one) and prints the metrics;
    writes metrics.csv, metrics.md and TensorBoard events to output=DIR (default RUN/eval/step_N).
    Other keys: direction=AtoB|BtoA, features=inception|fid_helper|tiny, any eval.* or data.* override.
    """
    from translate.eval.evaluate import evaluate_command

    own, overrides = split_args(args, ("run", "checkpoint", "output"))
    evaluate_command(own, overrides)



@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def judge(args: tuple[str, ...]) -> None:
    """Train a judge network: translate-judge task=segmentation|attributes recipe=NAME output=FILE [key=value ...]

    Keys: steps=2000 arch=resnet18 batch_size=8 lr=0.001 heldout=test data.root=DIR (any data.*).

    segmentation: the FCN-score's segmenter, trained on the real photos of a scenes or Cityscapes
    dataset; attributes: StarGAN's attribute classifier. Prints the held-out scores and saves the
    judge (weights + meta) for translate-eval.
    """
    from translate.eval.judges import judge_config, train_judge
    from translate.eval.report import format_table

    cfg = judge_config(list(args))
    path, table = train_judge(cfg)
    click.echo(f"{cfg.task} judge ({cfg.arch}, {cfg.steps} steps) on held-out real images:")
    click.echo(format_table(table))
    click.echo(f"saved to {path}")


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def export(args: tuple[str, ...]) -> None:
    """Export a generator: translate-export checkpoint=PATH|run=runs/NAME output=DIR [key=value ...]

    Keys: direction=AtoB target=NAME,... size=256 formats=torchscript,onnx eval=true tolerance=0.0001.

    Writes TorchScript (.pt) and ONNX (.onnx) with a dynamic batch and image size, and checks each
    exported model against the PyTorch model on random images before reporting success.
    """
    from translate import config
    from translate.eval.report import format_table
    from translate.export import export_generator

    table = export_generator(config.build(config.ExportConfig, config.parse_overrides(list(args))))
    click.echo(format_table(table, digits=8))


if __name__ == "__main__":
    train()
