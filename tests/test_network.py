"""Backbones, token modules, the HiTTs network with its ablations, and the STL / MTL baselines."""

from __future__ import annotations

import time

import pytest
import torch

from hitts.model.backbones import BACKBONES, ResNet18, build_resnet18, load_checkpoint
from hitts.model.network import (
    BaselineNet,
    HiTTsNet,
    ModelConfig,
    build_model,
    count_parameters,
)
from hitts.model.tokens import (
    FineGrainedTokens,
    GlobalTaskTokens,
    IntraTaskAttention,
    MultiScaleGlobalTaskTokens,
    feature_score,
    mix_tasks,
)

OUTPUTS = {"semseg": 6, "depth": 8, "normal": 5, "edge": 2}
TINY = {  # backbone -> the smallest sensible widths, so every test runs in well under a second
    "small": dict(width=0.25, channels=16),
    "segnet": dict(width=0.125, channels=16),
    "resnet18": dict(width=0.125, channels=16),
}
H, W = 32, 48


def tiny_config(backbone: str = "small", **kw) -> ModelConfig:
    kw.setdefault("outputs", dict(OUTPUTS))
    return ModelConfig(backbone=backbone, **TINY[backbone], **kw)


def image(b: int = 2, h: int = H, w: int = W) -> torch.Tensor:
    return torch.randn(b, 3, h, w)


def check_outputs(out: dict, outputs: dict[str, int], b: int, h: int, w: int) -> None:
    assert list(out) == list(outputs)
    for task, n in outputs.items():
        o = out[task]
        assert set(o) == {"logits", "feature", "mf", "fine_score", "fine_scores"}
        assert o["logits"].shape == (b, n, h, w)
        fb, _, fh, fw = o["feature"].shape
        assert fb == b
        assert o["mf"].shape == (b, 1, fh, fw)
        assert o["fine_score"].shape == (b, 1, h, w)
        assert o["fine_scores"].shape == (b, n, fh, fw)
        for key, t in o.items():
            assert torch.isfinite(t).all(), f"{task}/{key} has NaN or inf"
        assert ((o["mf"] > 0) & (o["mf"] <= 1)).all()
        assert (o["fine_scores"] > 0).all()


def backward(out: dict) -> None:
    """A stand-in for L_s + L_f: logits, features and M_f all get a gradient."""
    loss = sum(
        o["logits"].square().mean() + (o["mf"] * o["feature"].square()).mean() for o in out.values()
    )
    loss.backward()


# ------------------------------------------------------------------------------------------------
# Backbones


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_shapes_and_gradients(name):
    torch.manual_seed(0)
    net = BACKBONES[name](width=TINY[name]["width"])
    x = image(2, 35, 50)  # not divisible by any stride
    out = net(x)
    maps = out if net.is_multiscale else [out]
    assert len(maps) == len(net.out_channels) == len(net.strides)
    for m, c, s in zip(maps, net.out_channels, net.strides, strict=True):
        assert m.shape == (2, c, -(-35 // s), -(-50 // s))
        assert torch.isfinite(m).all()
    sum(m.mean() for m in maps).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_backbone_kinds():
    assert not BACKBONES["small"]().is_multiscale
    assert BACKBONES["small"]().strides == (8,) and BACKBONES["small"]().out_channels == (64,)
    assert BACKBONES["segnet"](width=0.125).strides == (1,)
    assert ResNet18(width=0.125).strides == (4, 8, 16, 32)
    assert count_parameters(BACKBONES["small"]()) < 1_000_000


def test_resnet18_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    src = ResNet18(width=0.125)
    state = dict(src.state_dict())
    state["fc.weight"] = torch.zeros(10, 64)  # an ImageNet classifier is ignored
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    dst = build_resnet18(width=0.125, checkpoint=path)
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_resnet18(width=0.125, checkpoint=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(ResNet18(width=0.25), path)


# ------------------------------------------------------------------------------------------------
# Token modules


def test_affinity_rows_sum_to_one_and_mixing():
    torch.manual_seed(0)
    gt = GlobalTaskTokens(num_tasks=3, dim=8)
    A = gt.task_affinity()
    assert A.shape == (1, 3, 3)
    assert torch.allclose(A.sum(-1), torch.ones(1, 3)) and (A > 0).all()
    feats, tokens, A2 = gt(torch.randn(2, 8, 4, 6))
    assert len(feats) == 3 and feats[0].shape == (2, 8, 4, 6)
    assert tokens.shape == (1, 3, 8) and torch.allclose(A, A2)
    assert torch.allclose(tokens[0], A[0] @ gt.tokens)  # Θ' = A Θ (Eq. 2)
    f = [torch.randn(2, 8, 4, 6) for _ in range(3)]
    mixed = mix_tasks(A, f)  # F' = A F (Eq. 2)
    assert torch.allclose(mixed[1], sum(A[0, 1, j] * f[j] for j in range(3)), atol=1e-6)
    no_inter = GlobalTaskTokens(num_tasks=3, dim=8, use_inter=False)
    assert torch.equal(no_inter.task_affinity()[0], torch.eye(3))


def test_multiscale_tokens_shapes_and_affinities():
    torch.manual_seed(0)
    chans = (4, 8, 16, 32)
    ms = MultiScaleGlobalTaskTokens(num_tasks=3, in_channels=chans, dim=12)
    shared = [torch.randn(2, c, 16 // 2**j, 24 // 2**j) for j, c in enumerate(chans)]
    feats, tokens, affinities = ms(shared)
    assert [f.shape for f in feats] == [(2, 12, 16, 24)] * 3  # Eq. 17
    assert tokens.shape == (1, 3, 12)  # Eq. 18
    assert len(affinities) == 4
    for A in affinities:
        assert A.shape == (1, 3, 3) and torch.allclose(A.sum(-1), torch.ones(1, 3))


def test_intra_task_attention_shapes():
    torch.manual_seed(0)
    for stride in (1, 3):
        attn = IntraTaskAttention(dim=8, stride=stride)
        f, t = attn(torch.randn(2, 8, 7, 10), torch.randn(1, 8))
        assert f.shape == (2, 8, 7, 10) and t.shape == (2, 8)
        pixels_only = IntraTaskAttention(dim=8, stride=stride, with_token=False)
        f, t = pixels_only(torch.randn(2, 8, 7, 10), None)
        assert f.shape == (2, 8, 7, 10) and t is None


def test_fine_tokens_eq4_shapes():
    """Eq. 4: φ_i (C_p, C) x F'_i (C, hw) gives one score map per token; G_i has C_p channels."""
    torch.manual_seed(0)
    B, C, Cp, h, w = 2, 8, 5, 4, 6
    fine = FineGrainedTokens(dim=C, num_outputs=Cp, hidden=16)
    feature, token = torch.randn(B, C, h, w), torch.randn(B, C)
    phi = fine.fine_tokens(token)
    assert phi.shape == (B, Cp, C)  # C_p tokens of dimension C (Eq. 3)
    G = fine.project(feature)
    assert G.shape == (B, Cp, h, w)
    logits, score = fine(feature, token)
    assert score.shape == (B, Cp, h, w) and logits.shape == (B, Cp, h, w)
    # scaled by 1/sqrt(C) like the attention logits (see FineGrainedTokens.forward)
    expected = torch.nn.functional.softplus(torch.einsum("bkc,bchw->bkhw", phi, feature) / C**0.5)
    assert torch.allclose(score, expected, atol=1e-5)
    assert torch.allclose(logits, fine.refine(G * expected), atol=1e-5)


def test_orthogonal_basis_is_orthonormal():
    fine = FineGrainedTokens(dim=8, num_outputs=7)
    o = fine.basis
    assert o.shape == (7, 7)
    assert torch.allclose(o @ o.T, torch.eye(7))
    assert "basis" not in fine.state_dict()  # fixed, rebuilt from C_p


def test_oe_separates_tokens():
    """Without OE every row of the MLP input is constant along C_p; with it the tokens differ."""
    torch.manual_seed(0)
    token = torch.randn(1, 8)
    with_oe = FineGrainedTokens(dim=8, num_outputs=4, use_oe=True).fine_tokens(token)
    without = FineGrainedTokens(dim=8, num_outputs=4, use_oe=False).fine_tokens(None)
    assert with_oe.shape == without.shape == (1, 4, 8)
    assert torch.isfinite(with_oe).all() and torch.isfinite(without).all()
    assert (with_oe[0, 0] - with_oe[0, 1]).abs().max() > 0


def test_feature_score_in_unit_interval():
    mf = feature_score(torch.randn(2, 8) * 10, torch.randn(2, 8, 4, 6) * 10)
    assert mf.shape == (2, 1, 4, 6) and ((mf >= 0) & (mf <= 1)).all()


# ------------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("kind", ["hitts", "mtl", "stl"])
def test_model_kinds_forward_backward(backbone, kind):
    torch.manual_seed(0)
    config = tiny_config(backbone, kind=kind, stl_task="depth")
    model = build_model(config)
    assert isinstance(model, HiTTsNet if kind == "hitts" else BaselineNet)
    out = model(image())
    outputs = {"depth": OUTPUTS["depth"]} if kind == "stl" else OUTPUTS
    check_outputs(out, outputs, 2, H, W)
    backward(out)
    if kind == "hitts":
        tokens = model.global_tokens.tokens
        assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    else:
        assert all(torch.equal(o["mf"], torch.ones_like(o["mf"])) for o in out.values())


ABLATIONS = {
    "full": {},
    "w/o OE": dict(use_oe=False),
    "w/o inter": dict(use_inter=False),
    "w/o intra": dict(use_intra=False),
    "w/o global": dict(use_global=False),
    "w/o fine": dict(use_fine=False),
}


@pytest.mark.parametrize("backbone", ["small", "resnet18"])
@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_ablations(backbone, ablation):
    torch.manual_seed(0)
    switches = ABLATIONS[ablation]
    model = build_model(tiny_config(backbone, **switches))
    out = model(image())
    check_outputs(out, OUTPUTS, 2, H, W)
    backward(out)
    named = dict(model.named_parameters())
    no_grad = [n for n, p in named.items() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    use_global = switches.get("use_global", True)
    assert model.has_global_tokens == use_global
    assert ("global_tokens.tokens" in named) == use_global
    if use_global:
        assert named["global_tokens.tokens"].grad.abs().sum() > 0  # θ learns
        assert (model.global_tokens.affinity is None) == (not switches.get("use_inter", True))
    else:
        assert model.task_affinity() is None
        assert all(torch.equal(o["mf"], torch.ones_like(o["mf"])) for o in out.values())

    use_fine = switches.get("use_fine", True)
    assert model.has_fine_tokens == use_fine
    if use_fine:
        phi_params = [p for n, p in named.items() if n.startswith("fine.semseg.mlp")]
        assert phi_params and all(p.grad.abs().sum() > 0 for p in phi_params)  # φ learns
        has_oe = "fine.semseg.embed.weight" in named
        assert has_oe == switches.get("use_oe", True)
        if has_oe:
            assert named["fine.semseg.embed.weight"].grad.abs().sum() > 0
    else:
        assert not any(n.startswith("fine.") for n in named)
        assert all(
            torch.equal(o["fine_score"], torch.ones_like(o["fine_score"])) for o in out.values()
        )
    assert (model.intra is None) == (not switches.get("use_intra", True))


@pytest.mark.parametrize("n_tasks", [1, 2, 3, 4])
def test_task_subsets(n_tasks):
    torch.manual_seed(0)
    outputs = dict(list(OUTPUTS.items())[:n_tasks])
    model = build_model(tiny_config(outputs=outputs))
    out = model(image())
    check_outputs(out, outputs, 2, H, W)
    backward(out)
    A = model.task_affinity()
    assert A.shape == (1, n_tasks, n_tasks)
    assert torch.allclose(A.sum(-1), torch.ones(1, n_tasks))


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_eval_is_deterministic_and_per_image(backbone):
    torch.manual_seed(0)
    model = build_model(tiny_config(backbone)).eval()
    x = image(3)
    with torch.no_grad():
        a, b = model(x), model(x)
        alone = model(x[1:2])
    for task in OUTPUTS:
        for key in a[task]:
            assert torch.equal(a[task][key], b[task][key])
            # no batch statistics: an image's prediction does not depend on its batch-mates
            assert torch.allclose(a[task][key][1:2], alone[task][key], atol=1e-5)


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("size", [(32, 48), (64, 64), (35, 50)])
def test_any_input_size(backbone, size):
    torch.manual_seed(0)
    model = build_model(tiny_config(backbone)).eval()
    with torch.no_grad():
        out = model(image(1, *size))
    check_outputs(out, OUTPUTS, 1, *size)


def test_segnet_feature_is_full_resolution():
    model = build_model(tiny_config("segnet")).eval()
    with torch.no_grad():
        out = model(image(1))
    assert out["semseg"]["feature"].shape[-2:] == (H, W)


def test_bad_input_is_named():
    model = build_model(tiny_config())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(2, 1, 32, 48\)"):
        model(torch.randn(2, 1, 32, 48))


def test_config_checks_and_round_trip():
    config = tiny_config(kind="stl", stl_task="edge", use_oe=False, aspp_rates=[6, 12, 18])
    assert config.aspp_rates == (6, 12, 18)
    assert config.task_outputs == {"edge": 2}
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="stl_task"):
        ModelConfig(outputs=OUTPUTS, kind="stl")
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(outputs=OUTPUTS, backbone="vgg")
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(outputs=OUTPUTS, kind="mtan")
    with pytest.raises(ValueError, match="C_p >= 2"):
        ModelConfig(outputs={"depth": 1})


def test_parameter_counts_order():
    hitts = count_parameters(build_model(ModelConfig(outputs=OUTPUTS)))
    mtl = count_parameters(build_model(ModelConfig(outputs=OUTPUTS, kind="mtl")))
    stl = count_parameters(build_model(ModelConfig(outputs=OUTPUTS, kind="stl", stl_task="edge")))
    assert stl < mtl < hitts < 1_000_000


def test_default_model_runs_at_demo_size():
    """The CPU default on a 96x128 batch of 8; the time is printed (see -s), never asserted."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(outputs=OUTPUTS)).eval()
    x = image(8, 96, 128)
    with torch.no_grad():
        model(x)  # warm-up
        start = time.perf_counter()
        out = model(x)
        elapsed = time.perf_counter() - start
    check_outputs(out, OUTPUTS, 8, 96, 128)
    print(
        f"\ndefault HiTTs forward, 8x3x96x128 on {torch.get_num_threads()} thread(s): "
        f"{elapsed * 1000:.0f} ms"
    )


def test_intra_task_query_pooling_keeps_shapes_and_learns():
    """query_stride > 1: the block runs on the pooled map and its change is upsampled back."""
    from hitts.model.tokens import IntraTaskAttention

    torch.manual_seed(0)
    block = IntraTaskAttention(dim=8, stride=4, query_stride=2)
    feature, token = torch.randn(2, 8, 9, 13, requires_grad=True), torch.randn(2, 8)
    out, new_token = block(feature, token)
    assert out.shape == feature.shape and new_token.shape == (2, 8)
    out.sum().backward()
    assert block.q.weight.grad is not None and torch.isfinite(feature.grad).all()
    from hitts.model.network import QUERY_STRIDE, ModelConfig, build_model

    assert QUERY_STRIDE["segnet"] == 2
    model = build_model(
        ModelConfig(outputs={"semseg": 3, "depth": 4}, backbone="segnet", width=0.125, channels=8)
    )
    assert all(m.query_stride == 2 for m in model.intra.values())
    y = model(torch.rand(1, 3, 32, 48))
    assert y["semseg"]["logits"].shape == (1, 3, 32, 48)
