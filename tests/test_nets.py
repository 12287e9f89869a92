"""translate.nets: parity with the official networks, the registry, official-checkpoint loading.

The reference fixtures (../shared/fixtures/reference, described in its KEYS.md) hold the official
networks' freshly initialised state dicts, inputs and outputs in eval and train mode.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from translate.config import ModelConfig
from translate.errors import UserError
from translate.nets import (
    DISCRIMINATORS,
    GENERATORS,
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    StarGANDiscriminator,
    StarGANGenerator,
    UnetGenerator,
    build_discriminator,
    build_generator,
    infer_generator,
    init_weights,
    load_generator_checkpoint,
    norm_layer,
)
from translate.nets.norm import GroupInstanceNorm2d, use_group_norm

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.pt")) if FIXTURES.is_dir() else []
needs_fixtures = pytest.mark.skipif(not FIXTURE_NAMES, reason="../shared/fixtures/reference not found")
each_fixture = pytest.mark.parametrize("name", FIXTURE_NAMES or ["missing"])


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: these nets are too small to gain from two, and when other jobs share
    the cores, OpenMP's second thread makes small convs stall for seconds instead of milliseconds.
    (Function-scoped so that it runs after conftest's own thread setting.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def reference(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


def official_class(fixture: dict) -> str:
    """'cyclegan.ResnetGenerator', 'stargan.Generator', ... from the fixture's source line."""
    repo = "stargan" if fixture["source"].startswith("yunjey/stargan") else "cyclegan"
    return f"{repo}.{fixture['source'].rsplit(':', 1)[1]}"


def build_like(fixture: dict) -> nn.Module:
    """Our network with the options the official one was built with (through the registry where
    the official code used define_G/define_D)."""
    kw = fixture["kwargs"]
    cls = official_class(fixture)
    if cls in ("cyclegan.ResnetGenerator", "cyclegan.UnetGenerator"):
        cfg = ModelConfig(generator=kw["netG"], ngf=kw["ngf"], norm=kw["norm"], dropout=kw["use_dropout"],
                          init=kw["init_type"], init_gain=kw["init_gain"])
        return build_generator(cfg, kw["input_nc"], kw["output_nc"])
    if cls in ("cyclegan.NLayerDiscriminator", "cyclegan.PixelDiscriminator"):
        cfg = ModelConfig(discriminator=kw["netD"], ndf=kw["ndf"], n_layers_D=kw["n_layers_D"],
                          norm=kw["norm"], init=kw["init_type"], init_gain=kw["init_gain"])
        return build_discriminator(cfg, kw["input_nc"])
    if cls == "stargan.Generator":
        return StarGANGenerator(kw["conv_dim"], kw["c_dim"], kw["repeat_num"])
    if cls == "stargan.Discriminator":
        return StarGANDiscriminator(kw["image_size"], kw["conv_dim"], kw["c_dim"], kw["repeat_num"])
    raise AssertionError(f"no builder for the fixture source {fixture['source']}")


def loaded_like(fixture: dict) -> nn.Module:
    net = build_like(fixture)
    net.load_state_dict(fixture["state_dict"], strict=True)
    return net


def inputs(fixture: dict) -> tuple[torch.Tensor, ...]:
    x = fixture["input"]
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def assert_close(out, ref, what: str) -> None:
    """KEYS.md's tolerance: max|out - ref| <= 1e-4 * max|ref| + 1e-7, per output tensor."""
    outs, refs = (out, ref) if isinstance(ref, (tuple, list)) else ((out,), (ref,))
    assert len(outs) == len(refs), what
    for o, r in zip(outs, refs):
        assert o.shape == r.shape, f"{what}: shape {tuple(o.shape)} != {tuple(r.shape)}"
        err, scale = (o.double() - r.double()).abs().max().item(), r.double().abs().max().item()
        assert err <= 1e-4 * scale + 1e-7, f"{what}: max error {err:.3g} ({err / scale:.3g} of max|ref|)"


# ---------------------------------------------------------------------------------------------
# Parity with the official networks


@needs_fixtures
@each_fixture
def test_seeded_build_draws_the_official_weights(name):
    # Same keys, shapes and order as upstream, and init in the same module order: a net built
    # after the same seed holds bit-identical weights and buffers.
    fixture = reference(name)
    torch.manual_seed(fixture["kwargs"]["seed"])
    ours = build_like(fixture).state_dict()
    theirs = fixture["state_dict"]
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key


@needs_fixtures
@each_fixture
def test_eval_output_matches_official(name):
    fixture = reference(name)
    net = loaded_like(fixture).eval()
    with torch.no_grad():
        assert_close(net(*inputs(fixture)), fixture["output_eval"], name)


@needs_fixtures
@each_fixture
def test_train_output_and_running_stats_match_official(name):
    # The U-Net's dropout masks come out identical too: its Dropout modules run in the same
    # order as upstream's, so the RNG seeded right before the forward yields the same draws.
    fixture = reference(name)
    net = loaded_like(fixture).train()
    torch.manual_seed(fixture["kwargs"]["seed"])
    with torch.no_grad():
        assert_close(net(*inputs(fixture)), fixture["output_train"], name)
    buffers = dict(net.named_buffers())
    assert set(fixture["buffers_after_train_forward"]) == {
        k for k in buffers if k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")}
    for key, ref in fixture["buffers_after_train_forward"].items():
        if ref.dtype == torch.int64:
            assert torch.equal(buffers[key], ref), key
        else:
            assert_close(buffers[key], ref, f"{name} {key}")


@needs_fixtures
def test_unet_train_output_without_dropout_matches_official():
    fixture = reference("pix2pix_unet256_G")
    net = loaded_like(fixture).train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        assert_close(net(*inputs(fixture)), fixture["output_train_no_dropout"], "unet without dropout")


# ---------------------------------------------------------------------------------------------
# Official checkpoints: inferring the architecture from keys and shapes


def expected_spec(fixture: dict) -> dict | None:
    kw = fixture["kwargs"]
    cls = official_class(fixture)
    if cls == "cyclegan.ResnetGenerator":
        return {"arch": "resnet", "input_nc": kw["input_nc"], "output_nc": kw["output_nc"], "ngf": kw["ngf"],
                "norm": kw["norm"], "dropout": kw["use_dropout"], "n_blocks": kw["n_blocks"],
                "padding_type": kw["padding_type"]}
    if cls == "cyclegan.UnetGenerator":
        return {"arch": "unet", "input_nc": kw["input_nc"], "output_nc": kw["output_nc"],
                "num_downs": kw["num_downs"], "ngf": kw["ngf"], "norm": kw["norm"], "dropout": kw["use_dropout"]}
    if cls == "stargan.Generator":
        return {"arch": "stargan", "conv_dim": kw["conv_dim"], "c_dim": kw["c_dim"], "repeat_num": kw["repeat_num"]}
    return None  # a discriminator


def assert_one_line_error(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


@needs_fixtures
@each_fixture
def test_infer_generator_from_official_state_dicts(name, tmp_path):
    fixture = reference(name)
    spec = expected_spec(fixture)
    path = tmp_path / f"{name}.pth"
    torch.save(fixture["state_dict"], path)
    if spec is None:
        with pytest.raises(UserError) as error:
            load_generator_checkpoint(path)
        assert_one_line_error(error, str(path), "is not a CycleGAN/pix2pix/StarGAN generator checkpoint",
                              "unrecognised keys such as")
        return
    net, inferred = load_generator_checkpoint(path)
    # The right options and the weights loaded: the parity tests above cover the outputs.
    assert inferred == spec
    assert isinstance(net, type(build_like(fixture)))
    state = net.state_dict()
    assert list(state) == list(fixture["state_dict"])
    assert all(torch.equal(state[k], v) for k, v in fixture["state_dict"].items())


# The U-Net's dropout leaves no trace in its keys and is always inferred on (see official.py).
OTHER_GENERATORS = [
    ("resnet", dict(input_nc=3, output_nc=3, ngf=8, norm="instance", dropout=False, n_blocks=6, padding_type="reflect")),
    ("resnet", dict(input_nc=1, output_nc=2, ngf=4, norm="batch", dropout=True, n_blocks=9, padding_type="reflect")),
    ("resnet", dict(input_nc=3, output_nc=3, ngf=4, norm="none", dropout=True, n_blocks=2, padding_type="zero")),
    ("resnet", dict(input_nc=3, output_nc=3, ngf=4, norm="instance", dropout=False, n_blocks=0, padding_type="reflect")),
    ("unet", dict(input_nc=3, output_nc=3, num_downs=7, ngf=4, norm="batch", dropout=True)),
    ("unet", dict(input_nc=1, output_nc=3, num_downs=8, ngf=2, norm="instance", dropout=True)),
    ("unet", dict(input_nc=3, output_nc=1, num_downs=5, ngf=4, norm="none", dropout=True)),
    ("stargan", dict(conv_dim=8, c_dim=3, repeat_num=2)),
]
CLASSES = {"resnet": ResnetGenerator, "unet": UnetGenerator, "stargan": StarGANGenerator}


def randomised(net: nn.Module) -> nn.Module:
    """Random weights and running stats, so that a wrong load cannot pass unnoticed."""
    init_weights(net, "normal", 0.5)
    for name, buffer in net.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_()
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    return net.eval()


def sample_input(arch: str, kwargs: dict) -> tuple[torch.Tensor, ...]:
    if arch == "stargan":
        return torch.rand(2, 3, 32, 32) * 2 - 1, torch.eye(kwargs["c_dim"])[:2]
    side = 2 ** kwargs["num_downs"] if arch == "unet" else 32
    return (torch.rand(2, kwargs["input_nc"], side, side) * 2 - 1,)


def spec_id(value) -> str:
    return value if isinstance(value, str) else "-".join(map(str, value.values()))


@pytest.mark.parametrize("arch,kwargs", OTHER_GENERATORS, ids=spec_id)
def test_infer_generator_recovers_other_architectures(arch, kwargs):
    torch.manual_seed(0)
    original = randomised(CLASSES[arch](**kwargs))
    net, spec = infer_generator(original.state_dict())
    assert spec == {"arch": arch, **kwargs}
    x = sample_input(arch, kwargs)
    with torch.no_grad():
        assert torch.equal(net.eval()(*x), original(*x))


def test_old_official_checkpoint_with_instance_norm_stats_and_module_prefix(tmp_path):
    # PyTorch 0.4-era official checkpoints: legacy file format, DataParallel's `module.` prefix
    # and running stats for instance norms that do not track them.
    torch.manual_seed(0)
    original = randomised(ResnetGenerator(3, 3, ngf=4, n_blocks=3))
    state = original.state_dict()
    for name, m in original.named_modules():
        if isinstance(m, nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.zeros(m.num_features)
            state[f"{name}.running_var"] = torch.ones(m.num_features)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "latest_net_G_A.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path, _use_new_zipfile_serialization=False)
    net, spec = load_generator_checkpoint(path)
    assert spec["arch"] == "resnet" and spec["norm"] == "instance" and spec["n_blocks"] == 3
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), original(x))


def test_batch_norm_checkpoint_without_num_batches_tracked_loads():
    torch.manual_seed(0)
    original = randomised(UnetGenerator(3, 3, num_downs=5, ngf=4, norm="batch"))
    state = {k: v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    net, spec = infer_generator(state)
    assert spec["norm"] == "batch"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), original(x))


@pytest.mark.parametrize("net", [NLayerDiscriminator(3, 8), NLayerDiscriminator(6, 8, norm="instance"),
                                 PixelDiscriminator(3, 8), StarGANDiscriminator(64, 4, 3, 6)],
                         ids=["patchgan", "patchgan-instance", "pixel", "stargan"])
def test_discriminator_state_dict_is_refused(net):
    with pytest.raises(UserError) as error:
        infer_generator(net.state_dict(), source="D.pth")
    assert_one_line_error(error, "D.pth is not a CycleGAN/pix2pix/StarGAN generator checkpoint",
                          f"unrecognised keys such as {next(iter(net.state_dict()))}")


def test_damaged_generator_state_dicts_are_refused():
    state = ResnetGenerator(3, 3, ngf=4, n_blocks=2).state_dict()
    cases = {
        "lacks keys such as model.4.weight": {k: v for k, v in state.items() if k != "model.4.weight"},
        "has unrecognised keys such as model.99.weight": {**state, "model.99.weight": torch.zeros(1)},
        "model.4.bias has shape [3] where [8] was expected": {**state, "model.4.bias": torch.zeros(3)},
    }
    for detail, damaged in cases.items():
        with pytest.raises(UserError) as error:
            infer_generator(damaged, source="G.pth")
        assert_one_line_error(error, "G.pth is not a CycleGAN/pix2pix/StarGAN generator checkpoint",
                              f"looks like a ResNet (CycleGAN) generator but {detail}")


def test_junk_is_refused_on_one_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist()))
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    keyed = tmp_path / "keyed.pth"
    torch.save({"foo": torch.zeros(3)}, keyed)
    nested = tmp_path / "nested.pth"
    torch.save({"G": {"model.1.weight": torch.zeros(1)}}, nested)
    cases = {
        junk: "is not a plain state dict of tensors",
        text: "cannot read",
        listed: "holds a list, not a state dict",
        keyed: "unrecognised keys such as foo",
        nested: "entry 'G' is a dict, not a tensor",
        tmp_path / "absent.pth": "does not exist",
        tmp_path: "is a folder",
    }
    for path, detail in cases.items():
        with pytest.raises(UserError) as error:
            load_generator_checkpoint(path)
        assert_one_line_error(error, str(path), detail)
    with pytest.raises(UserError) as error:
        infer_generator({})
    assert_one_line_error(error, "empty state dict")


# ---------------------------------------------------------------------------------------------
# Registry, shapes and initialisation


@pytest.mark.parametrize("generator", sorted(GENERATORS))
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_generator_registry_output_shapes(generator, norm):
    cfg = ModelConfig(generator=generator, ngf=2, norm=norm, dropout=True)
    net = build_generator(cfg, input_nc=1, output_nc=2)
    native = 2 ** net.num_downs if isinstance(net, UnetGenerator) else None
    for side in (32, 64):
        x = torch.rand(2, 1, side, side)
        if native and side % native:  # a U-Net needs sides that are multiples of 2 ** num_downs
            with pytest.raises(UserError, match=f"multiples of {native}"):
                net(x)
        else:
            assert net(x).shape == (2, 2, side, side)
    if native:
        x = torch.rand(2, 1, native, native)
        assert net(x).shape == (2, 2, native, native)
    # the in-place activations leave the graph differentiable
    x.requires_grad_(True)
    net(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("discriminator", sorted(DISCRIMINATORS))
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_discriminator_registry_output_shapes(discriminator, norm):
    cfg = ModelConfig(discriminator=discriminator, ndf=4, n_layers_D=2, norm=norm)
    net = build_discriminator(cfg, input_nc=6)
    n_layers = {"basic": 3, "n_layers": 2}.get(discriminator)
    for side in (32, 64):
        # n stride-2 convs halve the side; the two final 4x4 stride-1 convs take one pixel each
        expected = side // 2 ** n_layers - 2 if n_layers else side
        assert net(torch.rand(2, 6, side, side)).shape == (2, 1, expected, expected)


def test_stargan_output_shapes():
    g = StarGANGenerator(conv_dim=4, c_dim=3, repeat_num=2)
    for side in (32, 64):
        assert g(torch.rand(2, 3, side, side), torch.eye(3)[:2]).shape == (2, 3, side, side)
    for side, repeat_num in ((32, 5), (64, 6)):
        d = StarGANDiscriminator(side, conv_dim=4, c_dim=3, repeat_num=repeat_num)
        out_src, out_cls = d(torch.rand(2, 3, side, side))
        assert out_src.shape == (2, 1, 1, 1) and out_cls.shape == (2, 3)
    with pytest.raises(UserError, match="at least 64 pixels"):
        StarGANDiscriminator(32, repeat_num=6)


def test_official_bias_rule_and_norm_layers():
    # Convs before a norm have a bias only with instance norm, as upstream (also none: no bias).
    for norm, has_bias in (("instance", True), ("batch", False), ("none", False)):
        keys = NLayerDiscriminator(3, 4, norm=norm).state_dict()
        assert ("model.2.bias" in keys) == has_bias
        assert "model.0.bias" in keys and "model.11.bias" in keys
    assert list(NLayerDiscriminator(3, 4, norm="none").state_dict()) == [
        "model.0.weight", "model.0.bias", "model.2.weight", "model.5.weight", "model.8.weight",
        "model.11.weight", "model.11.bias"]
    assert isinstance(norm_layer("instance")(4), nn.InstanceNorm2d)
    assert not norm_layer("instance")(4).affine and not norm_layer("instance")(4).track_running_stats
    with pytest.raises(UserError, match="did you mean instance"):
        norm_layer("instanse")


@pytest.mark.parametrize("init", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_weights(init):
    torch.manual_seed(0)
    gain = 0.5
    net = build_generator(ModelConfig(generator="resnet_6blocks", ngf=16, norm="batch", init=init, init_gain=gain))
    conv = net.model[10].conv_block[1]  # a 64 -> 64 3x3 conv: fan_in = fan_out = 576
    std = conv.weight.std().item()
    expected = {"normal": gain, "xavier": gain * math.sqrt(2 / (576 + 576)), "kaiming": math.sqrt(2 / 576)}
    if init == "orthogonal":
        rows = conv.weight.reshape(64, -1)
        assert torch.allclose(rows @ rows.T, gain ** 2 * torch.eye(64), atol=1e-5)
    else:
        assert abs(std / expected[init] - 1) < 0.05, (std, expected[init])
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
        if isinstance(m, nn.BatchNorm2d):
            assert torch.count_nonzero(m.bias) == 0 and abs(m.weight.mean().item() - 1) < 3 * gain
    with pytest.raises(UserError, match="did you mean normal"):
        init_weights(net, "norml")


def test_unknown_architecture_names_suggest_the_closest():
    with pytest.raises(UserError, match="did you mean resnet_9blocks"):
        build_generator(ModelConfig(generator="resnet_9block"))
    with pytest.raises(UserError, match="did you mean pixel"):
        build_discriminator(ModelConfig(discriminator="pixle"), 3)


def test_group_instance_norm_is_the_official_normalisation_without_a_view():
    """GroupInstanceNorm2d computes F.instance_norm's values and gradients as a group norm of one
    channel per group, and returns a tensor of its own (not a view), so the in-place ReLU after
    it needs no copy of the gradient; use_group_norm switches only parameter-free instance norms."""
    torch.manual_seed(0)
    x = (torch.randn(3, 5, 7, 6, dtype=torch.double) * 4 + 2).requires_grad_()
    net = nn.Sequential(norm_layer("instance")(5), nn.InstanceNorm2d(5, affine=True, track_running_stats=True))
    use_group_norm(net)
    norm, stargan_norm = net
    assert type(norm) is GroupInstanceNorm2d and not list(norm.state_dict())
    assert type(stargan_norm) is nn.InstanceNorm2d  # StarGAN's (affine, running statistics) stays torch's
    got, expected = norm(x), F.instance_norm(x, eps=1e-5)
    assert got._base is None and expected._base is not None
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(got)
    (g1,) = torch.autograd.grad(torch.relu(got).mul(weights).sum(), x)
    (g2,) = torch.autograd.grad(torch.relu(expected).mul(weights).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)
    per_channel = got.detach().flatten(2)
    torch.testing.assert_close(per_channel.mean(-1), torch.zeros(3, 5, dtype=torch.double), atol=1e-10, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_group_instance_norm_on_channels_last_maps_keeps_the_format_and_the_values(batch):
    """One channels-last image goes through batch norm's kernel, larger batches through a
    contiguous group norm: the same values and gradients as instance norm, in channels-last."""
    torch.manual_seed(0)
    x = (torch.randn(batch, 5, 7, 6, dtype=torch.double) * 4 + 2).to(memory_format=torch.channels_last)
    x.requires_grad_()
    norm = use_group_norm(norm_layer("instance")(5))
    got, expected = norm(x), F.instance_norm(x.contiguous(), eps=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(expected)
    (g1,) = torch.autograd.grad(torch.relu(got).mul(weights).sum(), x)
    (g2,) = torch.autograd.grad(torch.relu(expected).mul(weights).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)
