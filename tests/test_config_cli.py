"""Recipes, overrides and the CLI's error contract (one line, exit status 2)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from translate import config
from translate.errors import UserError

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=None):
    code = "import sys; from translate.cli import {0}; sys.argv[0] = 'translate-{0}'; {0}()"
    command, rest = args[0], args[1:]
    return subprocess.run([sys.executable, "-c", code.format(command), *rest], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_every_recipe_loads_and_round_trips():
    recipes = config.list_recipes()
    assert {"cyclegan_synthetic", "cyclegan_facades", "cyclegan_cityscapes"} <= set(recipes)
    for name in recipes:
        cfg, recipe_name = config.load(name, [])
        assert recipe_name == name
        assert config.from_dict(tomllib.loads(config.to_toml(cfg))) == cfg


def test_overrides_are_typed():
    cfg, _ = config.load("cyclegan_synthetic", ["train.lr=0.001", "data.flip=false", "train.batch_size=4",
                                                "data.domains=horse,zebra", "cyclegan.lambda_A=3"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.data.flip is False
    assert cfg.train.batch_size == 4
    assert cfg.data.domains == ["horse", "zebra"]
    assert cfg.cyclegan.lambda_A == 3.0


def test_paper_defaults():
    cfg, _ = config.load("cyclegan_cityscapes", [])
    assert cfg.model.generator == "resnet_9blocks" and cfg.model.norm == "instance"
    assert cfg.cyclegan.gan_mode == "lsgan" and cfg.cyclegan.lambda_A == 10 and cfg.cyclegan.lambda_identity == 0.5
    assert cfg.cyclegan.pool_size == 50
    assert (cfg.train.lr, cfg.train.beta1, cfg.train.beta2) == (2e-4, 0.5, 0.999)
    assert (cfg.train.epochs, cfg.train.epochs_decay) == (100, 100)
    assert (cfg.data.load_size, cfg.data.crop_size) == (286, 256)
    assert cfg.model.init == "normal" and cfg.model.init_gain == 0.02


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown key train.lrr; did you mean train.lr?"),
    ("trian.lr=1", "unknown key trian.lr; did you mean train.lr?"),
    ("train.lr=fast", "train.lr must be a number, got 'fast'"),
    ("train.batch_size=1.5", "train.batch_size must be a whole number"),
    ("data.flip=maybe", "data.flip must be true or false"),
    ("model.generator=resnet9", "did you mean resnet_9blocks?"),
    ("train.batch_size=0", "train.batch_size must be greater than 0"),
    ("data.crop_size=512", "data.crop_size (512) is larger than data.load_size"),
    ("train=3", "train is a section"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UserError) as e:
        config.load("cyclegan_cityscapes", [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_compile_is_refused_for_stargan_only():
    # StarGAN's gradient penalty is a double backward, which torch.compile cannot differentiate.
    with pytest.raises(UserError, match="runtime.compile=true cannot train stargan"):
        config.load("stargan_synthetic", ["runtime.compile=true"])
    assert config.load("cyclegan_synthetic", ["runtime.compile=true"])[0].runtime.compile


def test_unknown_recipe_suggests():
    with pytest.raises(UserError, match="did you mean cyclegan_synthetic"):
        config.find_recipe("cyclegan_synthtic")


def test_recipe_by_path_and_bad_toml(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('method = "cyclegan"\n[train]\nlr = 0.01\n')
    cfg, name = config.load(str(good), [])
    assert cfg.train.lr == 0.01 and name == "mine"
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = ")
    with pytest.raises(UserError, match="not valid TOML"):
        config.load(str(bad), [])
    typo = tmp_path / "typo.toml"
    typo.write_text("[train]\nlrate = 0.1\n")
    with pytest.raises(UserError, match="unknown key train.lrate; did you mean train.lr"):
        config.load(str(typo), [])


def test_cli_unknown_key_is_one_line_exit_2(tmp_path):
    r = run_cli("train", "recipe=cyclegan_synthetic", "train.lrr=1", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown key train.lrr; did you mean train.lr?"
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()


def test_cli_list_and_print_config_from_any_directory(tmp_path):
    r = run_cli("train", "--list", cwd=tmp_path)
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert any(line.startswith("cyclegan_synthetic ") for line in lines)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # name and a summary on each line
    r = run_cli("train", "recipe=cyclegan_synthetic", "train.lr=0.005", "--print-config", cwd=tmp_path)
    assert r.returncode == 0
    printed = tomllib.loads(r.stdout)
    assert printed["train"]["lr"] == 0.005 and printed["method"] == "cyclegan"


def test_cli_missing_dataset_root_is_one_line(tmp_path):
    r = run_cli("train", "recipe=cyclegan_cityscapes", f"data.root={tmp_path / 'nowhere'}",
                f"output_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "cityscapes-dataset.com" in r.stderr and "leftImg8bit" in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing is written for a run that cannot start


def test_every_module_folder_is_a_package():
    # setup.py's find_packages ships only folders with an __init__.py: a missing one breaks a
    # non-editable install (pip install .) while an editable one still works.
    import translate
    root = Path(translate.__file__).parent
    folders = {p.parent for p in root.rglob("*.py")} - {root}
    assert all((f / "__init__.py").is_file() for f in folders), sorted(map(str, folders))
