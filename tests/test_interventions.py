"""Intervention specs and ablation hooks: the math, the file format, the hooks' life cycle, gradients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from caft.ablation.ablate import ablate_latents, ablate_projection, ablation_hooks
from caft.ablation.specs import (
    SPEC_FORMAT,
    InterventionError,
    InterventionSpec,
    load_spec,
    orthonormal_basis,
    random_directions,
    save_spec,
    steering_spec,
)
from caft.directions.sae_folders import load_local_sae, load_sae_folders
from caft.errors import DataError, ModelLoadError
from caft.model.loading import decoder_layers

D_MODEL = 32  # the tiny Llama's hidden size
TEXTS = [
    "Question: The doctor said _____ would call back.\nA) he\nB) her\nAnswer:",
    "The quick brown fox.\nAnswer:",
]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def basis(k: int = 4, d: int = D_MODEL, seed: int = 0, layer: int = 0) -> torch.Tensor:
    return random_directions(d, [layer], k, seed).bases[layer]


def logits(model: Any, tokenizer: Any) -> torch.Tensor:
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def capture(module: torch.nn.Module, store: list[torch.Tensor]) -> torch.utils.hooks.RemovableHandle:
    """Record a block's output as later hooks see it (hooks run in registration order)."""
    return module.register_forward_hook(lambda mod, args, out: store.append(out))


# --- projection math -------------------------------------------------------------------------------


def test_projection_removes_the_subspace_and_only_it() -> None:
    q = basis(k=4)
    h = randn(3, 5, D_MODEL)
    out = ablate_projection(h, q)
    assert (out @ q).abs().max() < 1e-5
    orthogonal = (h.double() - (h.double() @ q.double()) @ q.double().T).float()
    torch.testing.assert_close(ablate_projection(orthogonal, q), orthogonal, atol=1e-6, rtol=0)
    torch.testing.assert_close(ablate_projection(out, q), out, atol=1e-6, rtol=0)
    assert (out - h).abs().max() > 0.1


def test_projection_in_bfloat16_is_computed_in_float32() -> None:
    q = basis(k=16, d=256)
    h = randn(64, 256).to(torch.bfloat16)
    out = ablate_projection(h, q)
    assert out.dtype == torch.bfloat16
    exact = h.double() - (h.double() @ q.double()) @ q.double().T
    qb = q.to(torch.bfloat16)
    pure_bf16 = h - (h @ qb) @ qb.T
    ours_error = (out.double() - exact).abs().max()
    bf16_error = (pure_bf16.double() - exact).abs().max()
    assert ours_error < bf16_error
    assert (out.float() @ q).abs().max() < 0.05 * h.float().abs().max()


def test_orthonormal_basis_spans_the_input_with_its_signs() -> None:
    vectors = randn(5, D_MODEL) * 3
    q = orthonormal_basis(vectors)
    assert q.shape == (D_MODEL, 5) and q.dtype == torch.float32
    torch.testing.assert_close(q.T @ q, torch.eye(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(ablate_projection(vectors, q), torch.zeros_like(vectors), atol=1e-5, rtol=0)
    torch.testing.assert_close(q[:, 0], vectors[0] / vectors[0].norm())


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (torch.stack([torch.ones(8), 2 * torch.ones(8)]), "linearly dependent"),
        (torch.zeros(2, 8), "linearly dependent"),
        (torch.ones(9, 8), "k ≤ d"),
        (torch.ones(8), "2-D"),
        (torch.tensor([[1.0, float("nan")]]), "non-finite"),
    ],
)
def test_orthonormal_basis_rejects_bad_input(vectors: torch.Tensor, message: str) -> None:
    with pytest.raises(InterventionError, match=message):
        orthonormal_basis(vectors)


# --- random directions -----------------------------------------------------------------------------


def test_random_directions_are_seeded_orthonormal_and_leave_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    spec = random_directions(D_MODEL, [1, 0], k=3, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert spec.kind == "projection" and spec.layers == [0, 1]
    assert spec.provenance == {"selector": "random", "k": 3, "seed": 7}
    for q in spec.bases.values():
        assert q.shape == (D_MODEL, 3) and q.dtype == torch.float32
        torch.testing.assert_close(q.T @ q, torch.eye(3), atol=1e-6, rtol=0)
    assert not torch.allclose(spec.bases[0], spec.bases[1])
    again = random_directions(D_MODEL, [0, 1], k=3, seed=7)
    assert all(torch.equal(spec.bases[layer], again.bases[layer]) for layer in (0, 1))
    other = random_directions(D_MODEL, [0, 1], k=3, seed=8)
    assert not torch.allclose(spec.bases[0], other.bases[0])
    alone = random_directions(D_MODEL, [1], k=3, seed=7)
    assert torch.equal(alone.bases[1], spec.bases[1]), "a layer's basis depends on the other layers"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k ≤ d_model"),
        ({"k": D_MODEL + 1}, "k ≤ d_model"),
        ({"seed": -1}, "seed"),
        ({"layers": [0, 0]}, "duplicate"),
    ],
)
def test_random_directions_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    args = {"d_model": D_MODEL, "layers": [0], "k": 2, "seed": 0, **kwargs}
    with pytest.raises(InterventionError, match=message):
        random_directions(**args)


# --- spec file format --------------------------------------------------------------------------------


def test_projection_spec_round_trip(tmp_path: Path) -> None:
    spec = random_directions(D_MODEL, [0, 1], k=3, seed=1)
    spec = InterventionSpec("projection", bases=spec.bases, provenance={**spec.provenance, "src": ["a"]})
    path = tmp_path / "spec.safetensors"
    save_spec(spec, path)
    loaded = load_spec(path)
    assert loaded.kind == "projection" and loaded.layers == [0, 1]
    assert all(torch.equal(loaded.bases[layer], spec.bases[layer]) for layer in (0, 1))
    assert loaded.provenance == spec.provenance
    assert loaded.d_model() == D_MODEL
    assert [p.name for p in tmp_path.iterdir()] == ["spec.safetensors"]


def test_latent_spec_round_trip(tmp_path: Path, sae_factory: Callable[..., Path]) -> None:
    folder = sae_factory("standard")
    spec = InterventionSpec(
        "latent",
        saes={1: str(folder), 0: str(folder)},
        latents={0: [5, 3], 1: [63]},
        provenance={"selector": "manual", "seed": None},
    )
    path = tmp_path / "spec.safetensors"
    save_spec(spec, path)
    loaded = load_spec(path)
    assert loaded.kind == "latent" and loaded.layers == [0, 1]
    assert loaded.latents == {0: [5, 3], 1: [63]}
    assert loaded.saes == {0: str(folder), 1: str(folder)}
    assert loaded.provenance == spec.provenance
    assert loaded.d_model() == D_MODEL


def test_spec_reusing_one_basis_for_several_layers_round_trips(tmp_path: Path) -> None:
    q = basis(k=3)
    path = tmp_path / "shared.safetensors"
    save_spec(InterventionSpec("projection", bases={0: q, 1: q}), path)
    loaded = load_spec(path)
    assert torch.equal(loaded.bases[0], q) and torch.equal(loaded.bases[1], q)


def test_empty_spec_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    save_spec(InterventionSpec("projection", provenance={"selector": "auto"}), path)
    loaded = load_spec(path)
    assert loaded.layers == [] and loaded.d_model() is None


def write_raw_spec(path: Path, tensors: dict[str, torch.Tensor], **metadata: str) -> Path:
    meta = {"format": SPEC_FORMAT, "kind": "projection", "provenance": "{}", **metadata}
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (2 * basis(k=3), r"layer 3: basis columns are not orthonormal: max \|QᵀQ − I\| = 3"),
        (
            basis(k=3).masked_fill(torch.eye(D_MODEL, 3, dtype=torch.bool), float("inf")),
            "layer 3: .*non-finite",
        ),
        (torch.ones(D_MODEL), r"layer 3: basis must be 2-D"),
        (torch.eye(4, 5), r"layer 3: basis has k=5 columns but d_model=4"),
    ],
)
def test_load_spec_rejects_bad_bases(tmp_path: Path, tensor: torch.Tensor, message: str) -> None:
    path = write_raw_spec(tmp_path / "bad.safetensors", {"layer_3.basis": tensor.contiguous()})
    with pytest.raises(InterventionError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_load_spec_rejects_other_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(InterventionError, match="missing.safetensors"):
        load_spec(missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(InterventionError, match="garbage.safetensors"):
        load_spec(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(foreign))
    with pytest.raises(InterventionError, match="foreign.safetensors.*not an intervention spec"):
        load_spec(foreign)
    wrong_tensor = write_raw_spec(tmp_path / "latents.safetensors", {"layer_0.latents": torch.arange(3)})
    with pytest.raises(InterventionError, match="unexpected tensor 'layer_0.latents'"):
        load_spec(wrong_tensor)


def test_spec_validation() -> None:
    with pytest.raises(InterventionError, match="kind"):
        InterventionSpec("rotation")  # type: ignore[arg-type]
    with pytest.raises(InterventionError, match="JSON"):
        InterventionSpec("projection", provenance={"path": Path("x")})
    with pytest.raises(InterventionError, match="differ"):
        InterventionSpec("latent", saes={0: "sae"}, latents={1: [0]})
    with pytest.raises(InterventionError, match="layer 0: duplicate latent ids"):
        InterventionSpec("latent", saes={0: "sae"}, latents={0: [1, 1]})
    with pytest.raises(InterventionError, match="layer 0: no latent ids"):
        InterventionSpec("latent", saes={0: "sae"}, latents={0: []})
    with pytest.raises(InterventionError, match="bases disagree on d_model"):
        InterventionSpec("projection", bases={0: basis(d=8), 1: basis(d=16)})


# --- hooks on the tiny model -------------------------------------------------------------------------


def test_hooks_ablate_and_are_removed_on_exit(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    spec = random_directions(D_MODEL, [0], k=4, seed=0)
    q = spec.bases[0]
    block = decoder_layers(model)[0]
    before = logits(model, tokenizer)
    seen: list[torch.Tensor] = []
    with ablation_hooks(model, spec):
        handle = capture(block, seen)
        hooked = logits(model, tokenizer)
        handle.remove()
    assert (seen[0] @ q).abs().max() < 1e-5 * seen[0].abs().max()
    assert not torch.allclose(hooked, before)
    assert torch.equal(logits(model, tokenizer), before)
    assert not block._forward_hooks


def test_hooks_equal_manual_projection(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    spec = random_directions(D_MODEL, [1], k=2, seed=3)
    block = decoder_layers(model)[1]
    raw: list[torch.Tensor] = []
    ablated: list[torch.Tensor] = []
    first = capture(block, raw)
    with ablation_hooks(model, spec):
        second = capture(block, ablated)
        logits(model, tokenizer)
    first.remove()
    second.remove()
    torch.testing.assert_close(ablated[0], ablate_projection(raw[0], spec.bases[1]))


def test_hooks_removed_when_the_body_raises(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    before = logits(model, tokenizer)
    with pytest.raises(RuntimeError, match="boom"):
        with ablation_hooks(model, random_directions(D_MODEL, [0, 1], k=4, seed=0)):
            raise RuntimeError("boom")
    assert all(not block._forward_hooks for block in decoder_layers(model))
    assert torch.equal(logits(model, tokenizer), before)


def test_none_spec_is_a_no_op(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    before = logits(model, tokenizer)
    with ablation_hooks(model, None):
        assert all(not block._forward_hooks for block in decoder_layers(model))
        assert torch.equal(logits(model, tokenizer), before)


def test_hooks_reject_specs_that_do_not_fit(
    tiny_model: tuple[Any, Any], sae_factory: Callable[..., Path]
) -> None:
    model, _ = tiny_model
    out_of_range = r"layer\(s\) \[2\] out of range: the model has 2 decoder layers"
    with pytest.raises(InterventionError, match=out_of_range):
        with ablation_hooks(model, random_directions(D_MODEL, [0, 2], k=2, seed=0)):
            pass
    wrong_width = "layer 0: basis dimension 16 does not match the model's hidden size 32"
    with pytest.raises(InterventionError, match=wrong_width):
        with ablation_hooks(model, random_directions(16, [0], k=2, seed=0)):
            pass
    narrow = InterventionSpec("latent", saes={1: str(sae_factory("standard", d_in=16))}, latents={1: [0]})
    narrow_sae = "layer 1: SAE .* has d_in 16, but the model's hidden size is 32"
    with pytest.raises(InterventionError, match=narrow_sae):
        with ablation_hooks(model, narrow):
            pass
    too_wide = InterventionSpec("latent", saes={0: str(sae_factory("standard"))}, latents={0: [64]})
    with pytest.raises(InterventionError, match=r"layer 0: latent ids \[64\] out of range .* width 64"):
        with ablation_hooks(model, too_wide):
            pass
    assert all(not block._forward_hooks for block in decoder_layers(model))


class TupleBlock(torch.nn.Module):
    """A decoder block as older transformers wrote them: returns (hidden_states, extra)."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, str]:
        return self.block(hidden_states, **kwargs), "extra"


class UntupleBlock(torch.nn.Module):
    """The next block, accepting the tuple and recording what rode along with the hidden states."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block
        self.received: list[Any] = []

    def forward(self, hidden_states: tuple[torch.Tensor, str], **kwargs: Any) -> torch.Tensor:
        self.received.append(hidden_states[1:])
        return self.block(hidden_states[0], **kwargs)


def test_hooks_handle_tuple_returning_blocks(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    spec = random_directions(D_MODEL, [0], k=4, seed=0)
    with ablation_hooks(model, spec):
        expected = logits(model, tokenizer)
    layers = decoder_layers(model)
    layers[0] = TupleBlock(layers[0])
    layers[1] = UntupleBlock(layers[1])
    with ablation_hooks(model, spec):
        got = logits(model, tokenizer)
    torch.testing.assert_close(got, expected)
    assert layers[1].received == [("extra",)]


def last_token_loss(model: Any, tokenizer: Any) -> torch.Tensor:
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    target = torch.tensor(tokenizer.convert_tokens_to_ids(["ĠA", "ĠB"]))
    return torch.nn.functional.cross_entropy(model(**batch).logits[:, -1], target)


def test_projection_hook_gradients(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    spec = random_directions(D_MODEL, [0], k=4, seed=0)
    q = spec.bases[0]
    raw: list[torch.Tensor] = []

    def keep_grad(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        raw.append(out)

    handle = decoder_layers(model)[0].register_forward_hook(keep_grad)
    with ablation_hooks(model, spec):
        last_token_loss(model, tokenizer).backward()
    handle.remove()
    embed_grad = model.get_input_embeddings().weight.grad
    assert torch.isfinite(embed_grad).all() and embed_grad.abs().sum() > 0
    h_grad = raw[0].grad
    assert h_grad.abs().max() > 0
    assert (h_grad @ q).abs().max() < 1e-5 * h_grad.abs().max()


def test_latent_hooks_ablate_and_pass_gradients(
    tiny_model: tuple[Any, Any], sae_factory: Callable[..., Path]
) -> None:
    model, tokenizer = tiny_model
    spec = InterventionSpec("latent", saes={0: str(sae_factory("topk"))}, latents={0: [1, 2, 3, 5, 8]})
    (sae,) = load_sae_folders(spec.saes, "cpu").values()
    assert not any(p.requires_grad for p in sae.parameters())
    block = decoder_layers(model)[0]
    before = logits(model, tokenizer)
    raw: list[torch.Tensor] = []
    ablated: list[torch.Tensor] = []
    first = capture(block, raw)
    with ablation_hooks(model, spec):
        second = capture(block, ablated)
        hooked = logits(model, tokenizer)
        last_token_loss(model, tokenizer).backward()
    first.remove()
    second.remove()
    torch.testing.assert_close(ablated[0], ablate_latents(raw[0], sae, spec.latents[0]))
    assert not torch.allclose(hooked, before)
    assert torch.equal(logits(model, tokenizer), before)
    embed_grad = model.get_input_embeddings().weight.grad
    assert torch.isfinite(embed_grad).all() and embed_grad.abs().sum() > 0


# --- latent ablation math --------------------------------------------------------------------------------


def reference(sae: Any, h: torch.Tensor, latents: list[int], detach_error: bool) -> torch.Tensor:
    """decode(z with S zeroed) + (h − decode(z)): the definition, written the straightforward way."""
    z = sae.encode(h)
    mask = torch.ones(z.shape[-1])
    mask[latents] = 0
    error = h - sae.decode(z)
    return sae.decode(z * mask) + (error.detach() if detach_error else error)


def input_grad(
    fn: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    h = h.clone().requires_grad_(True)
    (fn(h) * weights).sum().backward()
    return h.grad


@pytest.mark.parametrize("name", ["standard", "topk", "topk_rescaled", "jumprelu"])
def test_latent_ablation_is_decode_with_zeroed_latents_plus_live_error(
    name: str, sae_factory: Callable[..., Path]
) -> None:
    spec = InterventionSpec("latent", saes={0: str(sae_factory(name))}, latents={0: [0]})
    sae = load_sae_folders(spec.saes, "cpu")[0]
    h = randn(4, 6, D_MODEL, seed=1) * 2
    with torch.no_grad():
        activity = sae.encode(h).abs().sum(dim=(0, 1))
    latents = activity.topk(3).indices.tolist()
    assert activity[latents].min() > 0

    out = ablate_latents(h, sae, latents)
    torch.testing.assert_close(out, reference(sae, h, latents, detach_error=False), atol=1e-5, rtol=1e-5)
    assert (out - h).abs().max() > 1e-2

    weights = randn(4, 6, D_MODEL, seed=2)
    grad = input_grad(lambda x: ablate_latents(x, sae, latents), h, weights)
    live = input_grad(lambda x: reference(sae, x, latents, detach_error=False), h, weights)
    detached = input_grad(lambda x: reference(sae, x, latents, detach_error=True), h, weights)
    torch.testing.assert_close(grad, live, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(grad, detached, atol=1e-3)


def test_latent_ablation_keeps_dtype(sae_factory: Callable[..., Path]) -> None:
    sae = load_sae_folders({0: sae_factory("topk")}, "cpu")[0]
    h = randn(2, 3, D_MODEL).to(torch.bfloat16)
    out = ablate_latents(h, sae, [0, 1])
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ablate_latents(h.float(), sae, [0, 1]), atol=0.05, rtol=0.02)


def test_latent_hooks_load_saes_with_the_stages_loader(
    tiny_model: tuple[Any, Any], sae_factory: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The latent ablation reads its SAEs with `caft.directions.sae_folders.load_local_sae`, the loader of the SAE
    stages, so a folder gets one dtype, one set of required files and one error wherever it is read."""
    model, _ = tiny_model
    loaded: list[tuple[Path, str]] = []

    def spy(folder: str | Path, device: str | torch.device = "cpu") -> Any:
        loaded.append((Path(folder), str(device)))
        return load_local_sae(folder, device)

    monkeypatch.setattr("caft.directions.sae_folders.load_local_sae", spy)
    folder = sae_factory("topk")
    with ablation_hooks(model, InterventionSpec("latent", saes={0: str(folder)}, latents={0: [1]})):
        pass
    assert loaded == [(folder, "cpu")]
    missing = InterventionSpec("latent", saes={1: str(tmp_path / "nope")}, latents={1: [0]})
    with pytest.raises(ModelLoadError, match=r"SAE folder .*nope lacks \['cfg.json', 'sae_weights.safetensors'\]"):
        with ablation_hooks(model, missing):
            pass


def test_stateful_normalisation_is_refused(sae_factory: Callable[..., Path]) -> None:
    stateful = load_sae_folders({0: sae_factory("layer_norm")}, "cpu")[0]
    with pytest.raises(InterventionError, match="layer_norm"):
        ablate_latents(randn(2, D_MODEL), stateful, [0])


def test_projection_stays_float32_inside_bf16_autocast():
    generator = torch.Generator().manual_seed(0)
    basis = orthonormal_basis(torch.randn(4, 64, generator=generator))
    h = torch.randn(8, 64, generator=generator) * 100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ablate_projection(h, basis)
    assert out.dtype == torch.float32
    assert (out @ basis).abs().max() < 1e-3


# --- mean ablation (centered projection) ------------------------------------------------------------------


def test_centered_projection_keeps_the_mean_along_the_subspace_and_everything_else() -> None:
    q, h, c = basis(k=3), randn(4, 7, D_MODEL, seed=1) * 5 + 40, randn(D_MODEL, seed=2) * 40
    out = ablate_projection(h, q, c)
    # along Q every token now sits at the center's coordinates: only the variation is removed
    torch.testing.assert_close(out @ q, (c @ q).expand(4, 7, 3), atol=1e-4, rtol=1e-5)
    orthogonal = torch.eye(D_MODEL) - q @ q.T
    torch.testing.assert_close(out @ orthogonal, h @ orthogonal, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ablate_projection(h, q, torch.zeros(D_MODEL)), ablate_projection(h, q))


def test_centers_round_trip_and_are_checked(tmp_path: Path, tiny_model: tuple[Any, Any]) -> None:
    q, c = basis(k=2, layer=1), randn(D_MODEL, seed=3)
    spec = InterventionSpec("projection", bases={1: q}, centers={1: c})
    save_spec(spec, tmp_path / "spec.safetensors")
    loaded = load_spec(tmp_path / "spec.safetensors")
    assert torch.equal(loaded.centers[1], c) and torch.equal(loaded.bases[1], q)
    model, tokenizer = tiny_model
    seen: list[torch.Tensor] = []
    with ablation_hooks(model, loaded):
        handle = capture(decoder_layers(model)[1], seen)  # registered after the ablation: sees its output
        logits(model, tokenizer)
    handle.remove()
    torch.testing.assert_close(seen[0] @ q, (c @ q).expand(*seen[0].shape[:2], 2), atol=1e-4, rtol=1e-5)
    with pytest.raises(InterventionError, match="layer 0: a center needs a basis at the same layer"):
        InterventionSpec("projection", bases={1: q}, centers={0: c})
    with pytest.raises(InterventionError, match=r"layer 1: center must be a \[d_model=32\] vector"):
        InterventionSpec("projection", bases={1: q}, centers={1: c[:5]})
    with pytest.raises(InterventionError, match="not bases or centers"):
        InterventionSpec("latent", centers={1: c})


# --- modes ------------------------------------------------------------------------------------------


def block_values_and_grads(model: Any, tokenizer: Any, spec: Any, mode: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                                       torch.Tensor]:
    """Block 0's raw output and its gradient (before the hook), and the output later blocks see."""
    raw: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []

    def keep_grad(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        raw.append(out)

    block = decoder_layers(model)[0]
    first = block.register_forward_hook(keep_grad)
    with ablation_hooks(model, spec, mode=mode):
        last = capture(block, seen)  # registered after the ablation hook: sees what flows on
        last_token_loss(model, tokenizer).backward()
    first.remove()
    last.remove()
    model.zero_grad(set_to_none=True)
    return raw[0].detach(), raw[0].grad, seen[0].detach()


@pytest.mark.parametrize("mode", ["project", "gradient", "activation"])
def test_modes_project_values_and_gradients_as_named(tiny_model: tuple[Any, Any], mode: str) -> None:
    model, tokenizer = tiny_model
    spec = random_directions(D_MODEL, [0], k=4, seed=0)
    q = spec.bases[0]
    h, grad, flowing = block_values_and_grads(model, tokenizer, spec, mode)
    forward_projected = mode in ("project", "activation")
    expected = ablate_projection(h, q) if forward_projected else h
    torch.testing.assert_close(flowing, expected, rtol=0, atol=1e-6)
    along_q = (grad @ q).abs().max() / grad.abs().max()
    if mode in ("project", "gradient"):
        assert along_q < 1e-5  # the gradient reaching the block has no component along Q
    else:
        assert along_q > 1e-2  # activation mode: the gradient passes the hook as if it were not there


def test_gradient_mode_forward_is_the_untouched_model(tiny_model: tuple[Any, Any]) -> None:
    model, tokenizer = tiny_model
    spec = random_directions(D_MODEL, [0, 1], k=4, seed=1)
    before = logits(model, tokenizer)
    with ablation_hooks(model, spec, mode="gradient"):
        during = logits(model, tokenizer)
    assert torch.equal(before, during)


def block_output_around_the_hook(model: Any, tokenizer: Any, spec: Any, mode: str) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """Block 0's output before its spec hook and as the layers above see it, both with their gradients
    after a backward pass of the last-token loss."""
    raw: list[torch.Tensor] = []
    above: list[torch.Tensor] = []

    def keep(store: list[torch.Tensor]) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
            out.retain_grad()
            store.append(out)
        return hook

    block = decoder_layers(model)[0]
    first = block.register_forward_hook(keep(raw))
    with ablation_hooks(model, spec, mode=mode):
        second = block.register_forward_hook(keep(above))
        last_token_loss(model, tokenizer).backward()
    first.remove()
    second.remove()
    model.zero_grad(set_to_none=True)
    return raw[0], above[0]


def test_activation_mode_gradient_equals_the_unhooked_gradient_at_the_block(tiny_model: tuple[Any, Any]) -> None:
    """Activation mode's backward is the identity at the hook: the gradient reaching the block equals the
    gradient the ablated activations receive from the layers above."""
    model, tokenizer = tiny_model
    raw, above = block_output_around_the_hook(model, tokenizer, random_directions(D_MODEL, [0], k=4, seed=0),
                                              "activation")
    torch.testing.assert_close(raw.grad, above.grad)


def test_unknown_mode_is_a_clear_error(tiny_model: tuple[Any, Any]) -> None:
    model, _ = tiny_model
    with pytest.raises(InterventionError, match="mode must be one of"):
        with ablation_hooks(model, None, mode="detach"):
            pass


# --- oblique projections (LEACE) -------------------------------------------------------------------


def oblique(d: int = D_MODEL, k: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A writeback Q and readout R with RᵀQ = I that are not orthogonal."""
    q = randn(d, k, seed=seed)
    r = randn(d, k, seed=seed + 1)
    r = r @ torch.linalg.inv(q.T @ r)  # now Qᵀ R = I
    return q, r


def test_oblique_projection_is_idempotent_and_removes_the_readout(tmp_path: Path) -> None:
    q, r = oblique()
    h = randn(5, D_MODEL, seed=3)
    center = randn(D_MODEL, seed=4)
    once = ablate_projection(h, q, center, r)
    torch.testing.assert_close(ablate_projection(once, q, center, r), once, rtol=0, atol=1e-4)
    torch.testing.assert_close((once - center) @ r, torch.zeros(5, 2), rtol=0, atol=1e-4)
    spec = InterventionSpec("projection", bases={3: q}, centers={3: center}, readouts={3: r})
    save_spec(spec, tmp_path / "leace.safetensors")
    loaded = load_spec(tmp_path / "leace.safetensors")
    assert torch.equal(loaded.readouts[3], spec.readouts[3]) and torch.equal(loaded.bases[3], spec.bases[3])


def test_readouts_are_checked() -> None:
    q, r = oblique()
    with pytest.raises(InterventionError, match="do not form a projection"):
        InterventionSpec("projection", bases={0: q}, readouts={0: 2 * r})
    with pytest.raises(InterventionError, match="needs a basis"):
        InterventionSpec("projection", bases={0: basis()}, readouts={1: r})
    with pytest.raises(InterventionError, match="not orthonormal"):
        InterventionSpec("projection", bases={0: q})  # without its readout, Q must be orthonormal


def test_last_position_specs_ablate_only_the_last_token(tiny_model: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny_model
    full = random_directions(D_MODEL, [0], k=4, seed=0)
    last = InterventionSpec("projection", bases=full.bases, positions="last")
    save_spec(last, tmp_path / "last.safetensors")
    assert load_spec(tmp_path / "last.safetensors").positions == "last"
    block = decoder_layers(model)[0]
    raw: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []
    first = capture(block, raw)
    with ablation_hooks(model, last):
        second = capture(block, seen)
        logits(model, tokenizer)
    first.remove()
    second.remove()
    torch.testing.assert_close(seen[0][:, :-1], raw[0][:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(seen[0][:, -1], ablate_projection(raw[0][:, -1], full.bases[0]), rtol=0, atol=1e-6)
    with pytest.raises(InterventionError, match="positions must be one of"):
        InterventionSpec("projection", bases=full.bases, positions="first")


# --- preventative steering -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["project", "gradient", "activation"])
def test_steering_shifts_the_forward_exactly_and_passes_the_gradient_unchanged(tiny_model: tuple[Any, Any],
                                                                              mode: str) -> None:
    """h ← h + s whatever the mode: the block output later layers see is shifted by exactly s, and the
    gradient reaching the block is the gradient the shifted output receives (the shift's Jacobian is I)."""
    model, tokenizer = tiny_model
    shift = randn(D_MODEL, seed=7)
    spec = InterventionSpec("steering", shifts={0: shift})
    before = logits(model, tokenizer)
    raw, above = block_output_around_the_hook(model, tokenizer, spec, mode)
    assert torch.equal(above.detach(), raw.detach() + shift)
    assert torch.equal(raw.grad, above.grad)
    assert torch.equal(logits(model, tokenizer), before)  # deployed: the hooks are gone
    with ablation_hooks(model, spec):
        assert not torch.allclose(logits(model, tokenizer), before)


def test_steering_spec_is_c_times_the_mean_difference_along_the_directions() -> None:
    q = basis(k=2, layer=3)
    mean = randn(D_MODEL, seed=5).double()
    spec = steering_spec(InterventionSpec("projection", bases={3: q}, provenance={"selection": "x"}), {3: mean}, 2.5)
    expected = 2.5 * (q.double() @ (q.double().T @ mean))
    torch.testing.assert_close(spec.shifts[3], expected.float())
    assert spec.kind == "steering" and spec.layers == [3]
    assert spec.provenance["steering"] == {"coefficient": 2.5, "norm_matched": False}
    residual = spec.shifts[3] - q @ (q.T @ spec.shifts[3])
    assert residual.abs().max() < 1e-5  # the shift lies in the selected subspace


def test_norm_matched_steering_pushes_as_hard_as_the_reference_along_its_own_directions() -> None:
    q = basis(k=2, layer=1, seed=3)
    mean = randn(D_MODEL, seed=5).double()
    directions = InterventionSpec("projection", bases={1: q})
    spec = steering_spec(directions, {1: mean}, 99.0, norms={1: 4.0})
    assert float(spec.shifts[1].norm()) == pytest.approx(4.0, rel=1e-6)  # the coefficient is the reference's
    along = q.double() @ (q.double().T @ mean)
    torch.testing.assert_close(spec.shifts[1].double() / 4.0, along / along.norm(), rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="reference steering has no shift at this layer"):
        steering_spec(directions, {1: mean}, 1.0, norms={2: 4.0})
    with pytest.raises(DataError, match="no mean tuned − base difference"):
        steering_spec(directions, {0: mean}, 1.0)


def test_steering_spec_round_trip_and_validation(tmp_path: Path, tiny_model: tuple[Any, Any]) -> None:
    spec = InterventionSpec("steering", shifts={1: randn(D_MODEL, seed=1), 0: randn(D_MODEL, seed=2)},
                            provenance={"steering": {"coefficient": 1.0}})
    save_spec(spec, tmp_path / "steer.safetensors")
    loaded = load_spec(tmp_path / "steer.safetensors")
    assert loaded.kind == "steering" and loaded.layers == [0, 1] and loaded.d_model() == D_MODEL
    assert all(torch.equal(loaded.shifts[layer], spec.shifts[layer]) for layer in (0, 1))
    assert loaded.provenance == spec.provenance
    with pytest.raises(InterventionError, match="finite 1-D"):
        InterventionSpec("steering", shifts={0: torch.full((D_MODEL,), float("nan"))})
    with pytest.raises(InterventionError, match="takes shifts only"):
        InterventionSpec("steering", bases={0: basis()})
    with pytest.raises(InterventionError, match="takes no shifts"):
        InterventionSpec("projection", bases={0: basis()}, shifts={0: randn(D_MODEL)})
    with pytest.raises(InterventionError, match="needs projection directions"):
        steering_spec(spec, {0: randn(D_MODEL)}, 1.0)
    model, _ = tiny_model
    with pytest.raises(InterventionError, match="do not match the model's hidden size"):
        with ablation_hooks(model, InterventionSpec("steering", shifts={0: randn(D_MODEL + 1)})):
            pass
