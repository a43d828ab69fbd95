"""What to ablate during fine-tuning and evaluation: intervention specs, their files and their builders.

An `InterventionSpec` names, per decoder layer L, what to remove from the residual stream (the output
of ``decoder_layers(model)[L]``):

- ``projection`` (the paper's default): an orthonormal basis Q; the hook sets h ← h − (h Q) Qᵀ, which
  removes the whole subspace (selected PCs, or the QR of selected SAE decoder rows). Optionally a center
  c (mean ablation: h − ((h − c) Q) Qᵀ) and a readout R with RᵀQ = I, for oblique projections such as
  LEACE's h − ((h − c) R) Qᵀ (the oracle bound);
- ``latent``: an SAE and latent ids S; the hook sets h ← h − Σ_{j∈S} z_j(h) W_dec[j], i.e. decode with
  S zeroed plus the SAE's reconstruction error. The error stays in the autograd graph: sae-lens's own
  ``use_error_term`` detaches it, which silently starves earlier layers of gradient during training;
- ``steering`` (preventative steering, the opposite operation): a shift s per layer; the hook sets
  h ← h + s, so the concept is supplied during training instead of removed (`steering_spec` builds s = c·v).

Specs are exchanged between stages as one ``.safetensors`` file (tensors + string metadata), never a
pickle, and every check that can fail names the file and the layer.

Applying a spec (the ablation arithmetic, the modes and the hooks) is `caft.ablation.ablate`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from caft.artifacts import atomic_path, load_tensors
from caft.errors import CaftError, DataError

Kind = Literal["projection", "latent", "steering"]
KINDS: tuple[str, ...] = ("projection", "latent", "steering")

SPEC_FORMAT = "caft.intervention_spec/1"

MEANS_FORMAT = "caft.residual_means/1"
"""The corpus mean residual per layer (`residual_means`): the centers of mean-ablating projections."""
"""Stored in every spec file, so that an unrelated safetensors file is rejected by name."""

ORTHONORMAL_TOL = 1e-4
"""Largest allowed |QᵀQ − I| entry: float32 QR of d≈2304 bases is ~1e-6, a wrong basis is ~1e-1."""

OBLIQUE_TOL = 1e-3
"""Largest allowed |RᵀQ − I| entry of an oblique projection (LEACE's factors are fitted in float32)."""

RANK_TOL = 1e-6
"""`orthonormal_basis` rejects inputs whose smallest |R_ii| is below this fraction of the largest."""

LATENT_ARCHITECTURES = frozenset({"standard", "gated", "topk", "abstopk", "jumprelu", "matching_pursuit"})
"""sae-lens architectures whose decode is affine in z with decoder rows W_dec[j] (possibly unit-scaled):
exactly those for which h − z_S W_dec[S] equals decode(z with S zeroed) + error."""

STATEFUL_NORMALIZATIONS = frozenset({"layer_norm", "constant_norm_rescale"})
"""Per-input rescaling in decode: a latent's contribution is no longer z_j W_dec[j]."""

_TENSOR_NAME = re.compile(r"^layer_(\d+)\.(basis|center|readout|latents|shift)$")
_KIND_TENSORS = {"projection": ("basis", "center", "readout"), "latent": ("latents",), "steering": ("shift",)}

MODES: tuple[str, ...] = ("project", "gradient", "activation")
POSITIONS: tuple[str, ...] = ("all", "last")
"""Where a spec ablates: every token, or only the last one (prompts are left-padded, so the last position
is every prompt's last token, where the answer is read out)."""


class InterventionError(CaftError):
    """An intervention spec is malformed, or does not fit the model it is applied to."""


def _check_basis(basis: torch.Tensor, layer: int) -> None:
    """A projection basis must be a finite [d_model, k] matrix with orthonormal columns, 1 ≤ k ≤ d."""
    if basis.ndim != 2:
        raise InterventionError(
            f"layer {layer}: basis must be 2-D [d_model, k], got shape {tuple(basis.shape)}"
        )
    d_model, k = basis.shape
    if k < 1:
        raise InterventionError(f"layer {layer}: basis has no columns (omit layers with nothing to ablate)")
    if k > d_model:
        raise InterventionError(f"layer {layer}: basis has k={k} columns but d_model={d_model} rows")
    if not torch.isfinite(basis).all():
        raise InterventionError(f"layer {layer}: basis has non-finite values")
    q = basis.to(torch.float64)
    deviation = (q.T @ q - torch.eye(k, dtype=torch.float64)).abs().max().item()
    if deviation > ORTHONORMAL_TOL:
        raise InterventionError(
            f"layer {layer}: basis columns are not orthonormal: max |QᵀQ − I| = {deviation:.3g} "
            f"> {ORTHONORMAL_TOL:g} (build bases with caft.ablation.specs.orthonormal_basis)"
        )


def check_latents(ids: Sequence[int], where: str) -> list[int]:
    """Latent ids as plain, distinct, non-negative ints (the SAE width is checked once it is loaded)."""
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise InterventionError(
                f"{where}: latent ids must be a 1-D integer tensor, got {ids.dtype} "
                f"of shape {tuple(ids.shape)}"
            )
        ids = ids.tolist()
    out: list[int] = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InterventionError(f"{where}: latent ids must be non-negative integers, got {value!r}")
        out.append(int(value))
    if not out:
        raise InterventionError(f"{where}: no latent ids (omit layers with nothing to ablate)")
    duplicates = sorted({i for i in out if out.count(i) > 1})
    if duplicates:
        raise InterventionError(f"{where}: duplicate latent ids {duplicates}")
    return out


def _check_readout(readout: torch.Tensor, basis: torch.Tensor, layer: int) -> torch.Tensor:
    """An oblique projection's readout R [d_model, k]: finite, shaped like the basis, with RᵀQ = I so that
    h ↦ h − (h R) Qᵀ is a projection (applying it twice changes nothing)."""
    if not isinstance(readout, torch.Tensor) or readout.shape != basis.shape:
        raise InterventionError(f"layer {layer}: readout must have the basis's shape {tuple(basis.shape)}")
    readout = readout.detach().to("cpu", torch.float32).contiguous()
    if not torch.isfinite(readout).all():
        raise InterventionError(f"layer {layer}: readout has non-finite values")
    product = readout.to(torch.float64).T @ basis.to(torch.float64)
    deviation = (product - torch.eye(basis.shape[1], dtype=torch.float64)).abs().max().item()
    if deviation > OBLIQUE_TOL:
        raise InterventionError(
            f"layer {layer}: readout and basis do not form a projection: max |RᵀQ − I| = {deviation:.3g}"
        )
    return readout


def _check_centers(centers: Mapping[int, torch.Tensor], bases: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Centers are optional per layer: a finite float32 [d_model] vector for a layer that has a basis."""
    checked = {}
    for layer, center in centers.items():
        layer = _check_layer_key(layer)
        if layer not in bases:
            raise InterventionError(f"layer {layer}: a center needs a basis at the same layer")
        if not isinstance(center, torch.Tensor) or center.shape != (bases[layer].shape[0],):
            raise InterventionError(f"layer {layer}: center must be a [d_model={bases[layer].shape[0]}] vector")
        center = center.detach().to("cpu", torch.float32).contiguous()
        if not torch.isfinite(center).all():
            raise InterventionError(f"layer {layer}: center has non-finite values")
        checked[layer] = center
    return dict(sorted(checked.items()))


def _check_shifts(shifts: Mapping[Any, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Finite float32 vectors [d_model], one width for every layer."""
    checked = {}
    for layer, shift in shifts.items():
        layer = _check_layer_key(layer)
        if not isinstance(shift, torch.Tensor) or shift.ndim != 1 or not shift.dtype.is_floating_point \
                or not torch.isfinite(shift).all():
            raise InterventionError(f"layer {layer}: a shift must be a finite 1-D [d_model] float tensor")
        checked[layer] = shift.detach().to("cpu", torch.float32).contiguous()
    widths = {shift.shape[0] for shift in checked.values()}
    if len(widths) > 1:
        raise InterventionError(f"shifts disagree on d_model: {sorted(widths)}")
    return dict(sorted(checked.items()))


def _check_layer_key(layer: Any) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise InterventionError(f"layer indices must be non-negative integers, got {layer!r}")
    return int(layer)


@dataclass(frozen=True, eq=False)
class InterventionSpec:
    """Per-layer directions to ablate, validated on construction; see the module docstring.

    ``projection`` uses `bases` ({layer: Q [d_model, k], orthonormal float32 unless the layer has a
    readout R with RᵀQ = I in `readouts`}) and optional `centers`; ``latent`` uses `saes`
    ({layer: sae-lens folder}) and `latents` ({layer: latent ids}). A spec with no layers ablates
    nothing; a listed layer must have at least one direction. `provenance` must be JSON-serialisable
    because it is stored in the spec file.
    """

    kind: Kind
    bases: dict[int, torch.Tensor] = field(default_factory=dict)
    centers: dict[int, torch.Tensor] = field(default_factory=dict)
    readouts: dict[int, torch.Tensor] = field(default_factory=dict)
    saes: dict[int, str] = field(default_factory=dict)
    latents: dict[int, list[int]] = field(default_factory=dict)
    shifts: dict[int, torch.Tensor] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    positions: str = "all"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InterventionError(f"intervention kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.positions not in POSITIONS:
            raise InterventionError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        try:
            json.dumps(self.provenance)
        except (TypeError, ValueError) as err:
            raise InterventionError(f"provenance must be JSON-serialisable: {err}") from err
        if self.kind == "steering":
            if self.bases or self.centers or self.readouts or self.saes or self.latents:
                raise InterventionError("a steering spec takes shifts only")
            object.__setattr__(self, "shifts", _check_shifts(self.shifts))
            return
        if self.shifts:
            raise InterventionError(f"a {self.kind} spec takes no shifts")
        if self.kind == "projection":
            if self.saes or self.latents:
                raise InterventionError("a projection spec takes bases only, not saes/latents")
            bases: dict[int, torch.Tensor] = {}
            readouts = {_check_layer_key(layer): readout for layer, readout in self.readouts.items()}
            stray = sorted(set(readouts) - {_check_layer_key(layer) for layer in self.bases})
            if stray:
                raise InterventionError(f"layer(s) {stray}: a readout needs a basis at the same layer")
            for layer, basis in self.bases.items():
                layer = _check_layer_key(layer)
                if not isinstance(basis, torch.Tensor) or not basis.dtype.is_floating_point:
                    raise InterventionError(f"layer {layer}: basis must be a floating-point tensor")
                basis = basis.detach().to("cpu", torch.float32).contiguous()
                if layer in readouts:
                    if basis.ndim != 2 or not torch.isfinite(basis).all():
                        raise InterventionError(f"layer {layer}: basis must be a finite 2-D [d_model, k] tensor")
                    readouts[layer] = _check_readout(readouts[layer], basis, layer)
                else:
                    _check_basis(basis, layer)
                bases[layer] = basis
            widths = {b.shape[0] for b in bases.values()}
            if len(widths) > 1:
                raise InterventionError(f"bases disagree on d_model: {sorted(widths)}")
            object.__setattr__(self, "bases", dict(sorted(bases.items())))
            object.__setattr__(self, "centers", _check_centers(self.centers, bases))
            object.__setattr__(self, "readouts", dict(sorted(readouts.items())))
        else:
            if self.bases or self.centers or self.readouts:
                raise InterventionError("a latent spec takes saes and latents, not bases or centers")
            saes = {_check_layer_key(layer): str(path) for layer, path in self.saes.items()}
            latents = {_check_layer_key(layer): ids for layer, ids in self.latents.items()}
            if set(saes) != set(latents):
                raise InterventionError(
                    f"latent spec: layers with an SAE {sorted(saes)} differ from layers with "
                    f"latent ids {sorted(latents)}"
                )
            object.__setattr__(self, "saes", dict(sorted(saes.items())))
            object.__setattr__(
                self,
                "latents",
                {layer: check_latents(ids, f"layer {layer}") for layer, ids in sorted(latents.items())},
            )

    @property
    def layers(self) -> list[int]:
        """The hooked layers, ascending."""
        return sorted({"projection": self.bases, "latent": self.latents, "steering": self.shifts}[self.kind])

    def d_model(self) -> int | None:
        """Residual-stream width the spec was built for (None if it has no layers).

        For latent specs this reads the first SAE's ``cfg.json`` (cheap: no sae-lens import).
        """
        if self.kind == "projection":
            return next((b.shape[0] for b in self.bases.values()), None)
        if self.kind == "steering":
            return next((s.shape[0] for s in self.shifts.values()), None)
        if not self.saes:
            return None
        layer, folder = next(iter(self.saes.items()))
        cfg_path = Path(folder) / "cfg.json"
        try:
            return int(json.loads(cfg_path.read_text())["d_in"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InterventionError(f"layer {layer}: cannot read d_in from {cfg_path}: {err}") from err


def save_spec(spec: InterventionSpec, path: str | Path) -> None:
    """Write `spec` as one ``.safetensors`` file, atomically (a half-written spec never exists)."""
    from safetensors.torch import save_file

    if spec.kind == "projection":
        # clone: safetensors refuses tensors sharing storage (one basis reused for several layers)
        tensors = {f"layer_{layer}.basis": basis.clone() for layer, basis in spec.bases.items()}
        tensors |= {f"layer_{layer}.center": center.clone() for layer, center in spec.centers.items()}
        tensors |= {f"layer_{layer}.readout": readout.clone() for layer, readout in spec.readouts.items()}
    elif spec.kind == "steering":
        tensors = {f"layer_{layer}.shift": shift.clone() for layer, shift in spec.shifts.items()}
    else:
        tensors = {
            f"layer_{layer}.latents": torch.tensor(ids, dtype=torch.int64)
            for layer, ids in spec.latents.items()
        }
    metadata = {"format": SPEC_FORMAT, "kind": spec.kind, "provenance": json.dumps(spec.provenance),
                "positions": spec.positions}
    if spec.kind == "latent":
        metadata["saes"] = json.dumps({str(layer): folder for layer, folder in spec.saes.items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_spec(path: str | Path) -> InterventionSpec:
    """Read and validate a spec written by `save_spec`; every error names the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError) as err:
        raise InterventionError(f"{path}: cannot read intervention spec: {err}") from err
    try:
        if metadata.get("format") != SPEC_FORMAT:
            raise InterventionError(
                f"not an intervention spec (metadata format={metadata.get('format')!r}, "
                f"expected {SPEC_FORMAT!r})"
            )
        kind = metadata.get("kind")
        if kind not in KINDS:
            raise InterventionError(f"metadata kind must be one of {list(KINDS)}, got {kind!r}")
        provenance = _json_field(metadata, "provenance")
        expected = _KIND_TENSORS[kind]
        per_layer: dict[str, dict[int, torch.Tensor]] = {name: {} for name in expected}
        for name, tensor in tensors.items():
            match = _TENSOR_NAME.match(name)
            if match is None or match.group(2) not in expected:
                raise InterventionError(f"unexpected tensor {name!r} in a {kind!r} spec")
            per_layer[match.group(2)][int(match.group(1))] = tensor
        if kind == "projection":
            return InterventionSpec(kind="projection", bases=per_layer["basis"], centers=per_layer["center"],
                                    readouts=per_layer["readout"], provenance=provenance,
                                    positions=metadata.get("positions", "all"))
        if kind == "steering":
            return InterventionSpec(kind="steering", shifts=per_layer["shift"], provenance=provenance,
                                    positions=metadata.get("positions", "all"))
        saes = _json_field(metadata, "saes")
        if not isinstance(saes, dict) or not all(isinstance(v, str) for v in saes.values()):
            raise InterventionError("metadata 'saes' must map layer -> SAE folder")
        try:
            sae_layers = {int(layer): folder for layer, folder in saes.items()}
        except ValueError as err:
            raise InterventionError(f"metadata 'saes' has a non-integer layer: {err}") from err
        return InterventionSpec(kind=kind, saes=sae_layers, latents=per_layer["latents"], provenance=provenance,
                                positions=metadata.get("positions", "all"))
    except InterventionError as err:
        raise InterventionError(f"{path}: {err}") from err


def _json_field(metadata: Mapping[str, str], key: str) -> Any:
    if key not in metadata:
        raise InterventionError(f"metadata lacks {key!r}")
    try:
        return json.loads(metadata[key])
    except ValueError as err:
        raise InterventionError(f"metadata {key!r} is not valid JSON: {err}") from err


def orthonormal_basis(vectors: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [d, k] of the span of the k rows of `vectors` [k, d] (PCs, SAE decoder rows).

    QR in float64 so that nearly parallel rows still give an exactly orthonormal float32 result;
    column signs follow the input (diag(R) > 0), so column i is row i minus its projection on rows < i.
    """
    if vectors.ndim != 2:
        raise InterventionError(
            f"orthonormal_basis needs a 2-D [k, d] tensor, got shape {tuple(vectors.shape)}"
        )
    k, d = vectors.shape
    if k < 1 or k > d:
        raise InterventionError(f"orthonormal_basis needs 1 ≤ k ≤ d vectors, got k={k}, d={d}")
    if not torch.isfinite(vectors).all():
        raise InterventionError("orthonormal_basis: input has non-finite values")
    q, r = torch.linalg.qr(vectors.detach().to("cpu", torch.float64).T, mode="reduced")
    diag = torch.diagonal(r)
    scale = diag.abs().max().item()
    smallest = diag.abs().min().item()
    if scale == 0.0 or smallest <= RANK_TOL * scale:
        worst = int(diag.abs().argmin())
        raise InterventionError(
            f"orthonormal_basis: the {k} vectors are linearly dependent (vector {worst} lies in the "
            f"span of the others: |R_ii| = {smallest:.3g} vs max {scale:.3g}); drop duplicates"
        )
    signs = torch.where(diag < 0, -1.0, 1.0).to(torch.float64)
    return (q * signs).to(torch.float32).contiguous()


def _layer_generator(seed: int, layer: int) -> torch.Generator:
    """A generator per (seed, layer): a layer's directions do not depend on which other layers exist."""
    state = np.random.SeedSequence([seed, layer]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


def random_directions(d_model: int, layers: Sequence[int], k: int, seed: int) -> InterventionSpec:
    """The random-directions baseline: a Haar-random k-dim subspace per layer, seeded.

    Uses explicit generators only, so the global torch RNG (and thus anything seeded elsewhere) is
    untouched.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InterventionError(f"random_directions: seed must be a non-negative integer, got {seed!r}")
    if not 1 <= k <= d_model:
        raise InterventionError(f"random_directions: need 1 ≤ k ≤ d_model={d_model}, got k={k}")
    layer_list = [_check_layer_key(layer) for layer in layers]
    if len(set(layer_list)) != len(layer_list):
        raise InterventionError(f"random_directions: duplicate layers in {layer_list}")
    bases = {}
    for layer in layer_list:
        gaussian = torch.randn(k, d_model, generator=_layer_generator(seed, layer), dtype=torch.float64)
        bases[layer] = orthonormal_basis(gaussian)
    return InterventionSpec(
        kind="projection", bases=bases, provenance={"selector": "random", "k": k, "seed": seed}
    )


def centered(spec: InterventionSpec, centers_path: Path | None) -> InterventionSpec:
    """A projection spec mean-ablating instead of zero-ablating (see `caft.ablation.ablate.ablate_projection`), when given means."""
    if centers_path is None or spec.kind != "projection":
        return spec
    means, _ = load_tensors(centers_path, MEANS_FORMAT)
    missing = [layer for layer in spec.bases if f"layer_{layer}" not in means]
    if missing:
        raise DataError(f"{centers_path}: no mean residual for layer(s) {missing}")
    centers = {layer: means[f"layer_{layer}"] for layer in spec.bases}
    return InterventionSpec("projection", bases=spec.bases, centers=centers,
                            provenance={**spec.provenance, "centers": str(centers_path)})


def steering_spec(directions: InterventionSpec, mean_differences: Mapping[int, torch.Tensor], coefficient: float,
                  norms: Mapping[int, float] | None = None) -> InterventionSpec:
    """Preventative steering along selected directions: per layer of the projection spec `directions`
    (basis Q), the shift s = c · Q Qᵀ μ, where μ is the layer's mean tuned − base difference (what training
    without an intervention adds to D_amb's residual stream, on average). At c = 1 the model is handed,
    during training, the part of that shift that lies along the selected directions, so it need not learn
    it; the hooks are removed at deployment as for every condition.

    With `norms` (a reference spec's |s| per layer: the manual selection's), each shift is rescaled to that
    norm instead: random directions steered exactly as hard as the selected ones, so that a difference
    between the two is about the directions, not the size of the push.
    """
    if directions.kind != "projection":
        raise InterventionError(f"steering needs projection directions (PCA components), got a {directions.kind} spec")
    shifts: dict[int, torch.Tensor] = {}
    for layer, basis in directions.bases.items():
        if layer not in mean_differences:
            raise DataError(f"layer {layer}: no mean tuned − base difference (the PCA moments lack the layer)")
        mean = mean_differences[layer].to(torch.float64)
        q = basis.to(torch.float64)
        along = q @ (q.T @ mean)
        if norms is None:
            shifts[layer] = (coefficient * along).float()
            continue
        if layer not in norms:
            raise DataError(f"layer {layer}: the reference steering has no shift at this layer "
                            f"(it steers layers {sorted(norms)}); steer random directions layer-matched")
        size = float(along.norm())
        if size == 0.0:
            raise DataError(f"layer {layer}: the mean difference has no component along the selected directions")
        shifts[layer] = (along * (norms[layer] / size)).float()
    provenance = {**directions.provenance, "steering": {"coefficient": coefficient, "norm_matched": norms is not None}}
    return InterventionSpec("steering", shifts=shifts, provenance=provenance, positions=directions.positions)
