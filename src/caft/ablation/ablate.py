"""Applying an intervention spec: the ablation arithmetic and the hooks that apply it while training or
evaluating.

- projection: h ← h − ((h − c) R) Qᵀ (R = Q, c = 0 unless the spec says otherwise), in float32;
- latent: h ← h − Σ_{j∈S} z_j(h) W_dec[j], i.e. decode with S zeroed plus the SAE's reconstruction error.
  The error stays in the autograd graph: sae-lens's own ``use_error_term`` detaches it, which silently
  starves earlier layers of gradient during training.

How an ablation enters training is the *mode* (`MODES`): ``project`` replaces the block output by its
ablation, so values and gradients are both projected (the paper's CAFT); ``gradient`` leaves the
forward pass untouched and projects only the gradient flowing back through the block output (no
train/deploy mismatch); ``activation`` ablates the forward values but lets the gradient through as if
no hook were there. Hooks go through `caft.model.hooks.block_hooks`, which always removes them.

A steering spec adds its shift instead (h ← h + s, preventative steering). Its Jacobian is the identity,
so ``project`` and ``activation`` train alike and ``gradient`` would drop it altogether: steering always
shifts the forward pass, whatever the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from caft.ablation.specs import (
    LATENT_ARCHITECTURES,
    MODES,
    STATEFUL_NORMALIZATIONS,
    InterventionError,
    InterventionSpec,
    check_latents,
)
from caft.directions.sae_folders import load_sae_folders
from caft.model.hooks import block_hooks
from caft.model.loading import hidden_size, num_layers

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformers import PreTrainedModel


def ablate_projection(h: torch.Tensor, basis: torch.Tensor, center: torch.Tensor | None = None,
                      readout: torch.Tensor | None = None) -> torch.Tensor:
    """h − ((h − c) R) Qᵀ in float32 (bf16 would leave a visible component along Q), cast back to h's dtype;
    R = Q (an orthogonal projection) unless an oblique readout is given.

    Without a center (c = 0) this zero-ablates the subspace, as the paper does. With c = the mean
    residual it mean-ablates: only the variation along Q is removed, the constant part stays. On Gemma 3
    that constant part is most of hQ (|mean hQ| ≈ 500 against a spread of ≈ 130 for the manual SAE
    rows at layer 4), so zero ablation also shifts every token, and a model trained under that shift
    breaks once the hooks are removed. Autocast is switched off: it would run these products in bf16.
    """
    with torch.autocast(h.device.type, enabled=False):
        hf = h.float()
        q = basis.to(device=h.device, dtype=torch.float32)
        shifted = hf if center is None else hf - center.to(device=h.device, dtype=torch.float32)
        r = q if readout is None else readout.to(device=h.device, dtype=torch.float32)
        return (hf - (shifted @ r) @ q.T).to(h.dtype)


def check_sae(sae: SAE, where: str) -> None:
    """Reject SAEs for which h − z_S W_dec[S] is not decode(z with S zeroed) + error."""
    cfg = sae.cfg
    architecture = cfg.architecture()
    if architecture not in LATENT_ARCHITECTURES:
        raise InterventionError(
            f"{where}: SAE architecture {architecture!r} is not supported for latent ablation; "
            f"supported: {sorted(LATENT_ARCHITECTURES)}"
        )
    if cfg.normalize_activations in STATEFUL_NORMALIZATIONS:
        raise InterventionError(
            f"{where}: SAE normalize_activations={cfg.normalize_activations!r} rescales each "
            "input, so a latent's contribution is not z_j·W_dec[j]; fold the normalisation first"
        )
    if cfg.reshape_activations != "none":
        raise InterventionError(
            f"{where}: SAE reshape_activations={cfg.reshape_activations!r}: only residual-stream "
            "SAEs ('none') can be applied to decoder-block outputs"
        )
    if tuple(sae.W_dec.shape) != (cfg.d_sae, cfg.d_in):
        raise InterventionError(
            f"{where}: SAE W_dec has shape {tuple(sae.W_dec.shape)}, expected "
            f"(d_sae, d_in) = ({cfg.d_sae}, {cfg.d_in})"
        )


def decoder_rows(sae: SAE, ids: torch.Tensor) -> torch.Tensor:
    """Rows that latent ids add to the reconstruction per unit of z (unit rows when sae-lens rescales)."""
    rows = sae.W_dec.detach()[ids].float()
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        rows = rows / rows.norm(dim=-1, keepdim=True)
    return rows


class LatentAblation:
    """h ↦ h − z_S(h) W_dec[S] for one SAE, with the decoder rows gathered once."""

    def __init__(self, sae: SAE, latents: Sequence[int], where: str) -> None:
        check_sae(sae, where)
        ids = check_latents(latents, where)
        too_large = [i for i in ids if i >= sae.cfg.d_sae]
        if too_large:
            raise InterventionError(
                f"{where}: latent ids {too_large} out of range for an SAE of width {sae.cfg.d_sae}"
            )
        self.sae = sae
        self.ids = torch.tensor(ids, dtype=torch.int64, device=sae.W_dec.device)
        self.rows = decoder_rows(sae, self.ids)
        self.columns = _selected_encoder(sae, self.ids)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(h.device.type, enabled=False):  # float32 even inside bf16 autocast
            hf = h.to(device=self.rows.device, dtype=torch.float32)
            z_selected = self._encode_selected(hf)
            out = hf - z_selected @ self.rows
            return out.to(device=h.device, dtype=h.dtype)

    def _encode_selected(self, hf: torch.Tensor) -> torch.Tensor:
        if self.columns is None:
            z = self.sae.encode(hf)
            if z.is_sparse:
                z = z.to_dense()
            return z[..., self.ids].float()
        weight, bias, threshold = self.columns
        pre = self.sae.process_sae_in(hf) @ weight + bias
        z = torch.relu(pre)
        return z if threshold is None else z * (pre > threshold).to(z.dtype)


def _selected_encoder(
    sae: SAE, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """Encoder columns of the selected latents, when each latent's activation depends on its own
    pre-activation only (ReLU and JumpReLU SAEs): then encoding S costs |S| columns instead of d_sae,
    which keeps latent ablation with 16k-latent SAEs cheap. TopK and others need the full encode.
    """
    architecture = sae.cfg.architecture()
    if architecture not in ("standard", "jumprelu") or not isinstance(sae.activation_fn, torch.nn.ReLU):
        return None
    weight = sae.W_enc.detach()[:, ids].float()
    bias = sae.b_enc.detach()[ids].float()
    threshold = sae.threshold.detach()[ids].float() if architecture == "jumprelu" else None
    return weight, bias, threshold


def ablate_latents(h: torch.Tensor, sae: SAE, latents: Sequence[int]) -> torch.Tensor:
    """h − Σ_{j∈S} z_j(h) W_dec[j] in float32, cast back to h's dtype.

    Equals decode(z with S zeroed) + (h − decode(z)), with gradients reaching h through both the
    identity and z(h) (the error term is live; sae-lens's ``use_error_term`` would detach it).
    Gradients also reach the SAE's parameters if they require grad: `load_sae_folders` freezes them.
    """
    return LatentAblation(sae, latents, "ablate_latents")(h)


def steer(h: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """h + s, added in float32 and cast back to h's dtype: the forward pass moves by exactly s, the
    gradient passes unchanged."""
    with torch.autocast(h.device.type, enabled=False):
        return (h.float() + shift.to(device=h.device, dtype=torch.float32)).to(h.dtype)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _ablations(
    model: PreTrainedModel, spec: InterventionSpec
) -> dict[int, Callable[[torch.Tensor], torch.Tensor]]:
    """Validate `spec` against `model` and build one ablation function per layer, on the model's device."""
    n_layers = num_layers(model)
    bad = [layer for layer in spec.layers if layer >= n_layers]
    if bad:
        raise InterventionError(
            f"intervention layer(s) {bad} out of range: the model has {n_layers} decoder layers "
            f"(valid indices 0..{n_layers - 1})"
        )
    width = hidden_size(model)
    device = _model_device(model)
    if spec.kind == "steering":
        wrong = {layer: shift.shape[0] for layer, shift in spec.shifts.items() if shift.shape[0] != width}
        if wrong:
            raise InterventionError(f"steering shifts of width {wrong} (per layer) do not match the model's hidden "
                                    f"size {width}")
        return {layer: lambda h, s=shift.to(device): steer(h, s) for layer, shift in spec.shifts.items()}
    if spec.kind == "projection":
        ablations: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        for layer, basis in spec.bases.items():
            if basis.shape[0] != width:
                raise InterventionError(
                    f"layer {layer}: basis dimension {basis.shape[0]} does not match the model's "
                    f"hidden size {width}"
                )
            q = basis.to(device)
            center = spec.centers[layer].to(device) if layer in spec.centers else None
            readout = spec.readouts[layer].to(device) if layer in spec.readouts else None
            ablations[layer] = lambda h, q=q, c=center, r=readout: ablate_projection(h, q, c, r)
        return ablations
    ablations = {}
    for layer, sae in load_sae_folders(spec.saes, device).items():
        if sae.cfg.d_in != width:
            raise InterventionError(
                f"layer {layer}: SAE {spec.saes[layer]} has d_in {sae.cfg.d_in}, but the model's "
                f"hidden size is {width}"
            )
        ablations[layer] = LatentAblation(sae, spec.latents[layer], f"layer {layer}")
    return ablations


def in_mode(ablate: Callable[[torch.Tensor], torch.Tensor], mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """`ablate` as the given mode applies it (see the module docstring).

    ``gradient``: h + (a − a.detach()) with a = ablate(h) − h is exactly h forward, and its Jacobian is
    ablate's. ``activation``: ablate(h).detach() + (h − h.detach()) is exactly ablate(h) forward, with
    the identity as Jacobian.
    """
    if mode == "project":
        return ablate
    if mode == "gradient":
        def gradient_only(h: torch.Tensor) -> torch.Tensor:
            change = ablate(h) - h
            return h + (change - change.detach())

        return gradient_only
    if mode == "activation":
        return lambda h: ablate(h).detach() + (h - h.detach())
    raise InterventionError(f"intervention mode must be one of {list(MODES)}, got {mode!r}")


def at_positions(ablate: Callable[[torch.Tensor], torch.Tensor], positions: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """`ablate` applied to every position of h [batch, tokens, d], or to the last one only."""
    if positions == "all":
        return ablate
    return lambda h: torch.cat([h[:, :-1], ablate(h[:, -1:])], dim=1)


@contextmanager
def ablation_hooks(model: PreTrainedModel, spec: InterventionSpec | None, mode: str = "project") -> Iterator[None]:
    """Ablate `spec` at the output of its decoder layers, as `mode` says, while the context is open.

    Everything is validated and moved to the model's device before any hook is registered; the hooks
    are always removed on exit, so the model afterwards is exactly the untouched model (the
    "deployed" evaluation). `None` means no intervention.
    """
    if mode not in MODES:
        raise InterventionError(f"intervention mode must be one of {list(MODES)}, got {mode!r}")
    if spec is None:
        yield
        return
    applied = mode if spec.kind != "steering" else "project"
    ablations = {layer: in_mode(at_positions(ablate, spec.positions), applied)
                 for layer, ablate in _ablations(model, spec).items()}
    with block_hooks(model, ablations):
        yield
