"""Bands and units: which raster band feeds which model band, and how its values become the model's.

The model directory's config.json declares, per band the model expects
(``input_bands``): its name and aliases, its units, its scale/offset in GDAL's
convention (physical value = stored value * scale + offset) and the valid range
of stored values. A request (``band_names``, ``bands``, ``scale``, ``offset``)
or the GeoTIFF itself (GDAL band descriptions and scale/offset metadata) says
what the raster holds. This module turns both into a ``BandPlan``: raster
band per model band, and a per-band affine ``model_value = raw * gain + bias``
that pre-processing folds into normalisation (no extra pass).

The rules, in order (documented in the plugin README, "Bands and units"):

1. Band order: ``bands`` (indices) > ``band_names`` > the raster's band
   descriptions (used when every model band finds exactly one match) > the
   raster's order (its band count must equal the model's).
2. Units stated (request ``scale``/``offset``, else GDAL metadata): converted
   exactly.
3. Nothing stated and a float raster whose valid values all lie in
   [-0.5, 1.5] while the model expects values up to >= 100 (scaled
   integers): read as reflectance 0..1 (scale 1, offset 0) and converted.
4. Nothing stated: if the darkest 0.1 % of pixels of *every* band is at or
   above 0.1 (in physical units) the raster is refused: real surface
   reflectance scenes hold dark pixels (water, shadow, dense vegetation in
   the visible), and a floor like this is the +1000 offset of Sentinel-2 L2A
   (processing baseline >= 04.00). Saying ``scale``/``offset`` turns this off.
5. Always: more than 1 % of valid pixels of a band outside the model's
   valid range (after conversion) is refused, with what was expected and seen.
6. Nothing said about order (rule 1's last case): if the bands' means fit the
   model's per-band statistics far better in another order, refused as
   probably out of order (say ``band_names`` or ``bands``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Rule 3: a float raster in this range is reflectance 0..1 (allowing noise and bright clouds).
FLOAT_REFLECTANCE_RANGE = (-0.5, 1.5)
# Rule 4: darkest-pixel quantile and floor (physical units) that mark an offset raster.
DARK_QUANTILE = 0.001
DARK_FLOOR = 0.1
# Rule 5: share of valid pixels a band may have outside the valid range.
OUT_OF_RANGE_TOLERANCE = 0.01
# Rule 6: identity must not be this many times worse than the best order (and worse than 1).
ORDER_RATIO = 4.0
ORDER_MIN_DISTANCE = 1.0


class UnitsError(ValueError):
    """An input whose bands or values cannot be what the model expects; ``details`` says why."""

    def __init__(self, message: str, reason: str, details: dict[str, Any]):
        super().__init__(message)
        self.reason = reason
        self.details = details


@dataclass(frozen=True)
class BandSpec:
    """One band the model expects (from config.json's ``input_bands``)."""

    name: str
    aliases: tuple[str, ...] = ()
    units: str = ""
    scale: float = 1.0  # physical = stored * scale + offset
    offset: float = 0.0
    valid_range: tuple[float, float] | None = None  # of stored values

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "aliases": list(self.aliases), "units": self.units,
                             "scale": self.scale, "offset": self.offset}
        if self.valid_range is not None:
            d["valid_range"] = list(self.valid_range)
        return d


def band_specs_from_config(cfg: dict[str, Any], num_bands: int) -> list[BandSpec]:
    """``input_bands`` from config.json; older configs (``band_names`` + ``input_units``) still load."""
    entries = cfg.get("input_bands")
    if entries:
        if len(entries) != num_bands:
            raise ValueError(f"config.json input_bands has {len(entries)} entries; num_bands is {num_bands}")
        specs = []
        for e in entries:
            vr = e.get("valid_range")
            specs.append(BandSpec(
                name=str(e["name"]), aliases=tuple(str(a) for a in e.get("aliases", ())),
                units=str(e.get("units", "")), scale=float(e.get("scale", 1.0)),
                offset=float(e.get("offset", 0.0)),
                valid_range=(float(vr[0]), float(vr[1])) if vr else None))
            if specs[-1].scale == 0:
                raise ValueError(f"config.json input_bands: band {e['name']} has scale 0")
        return specs
    names = list(cfg.get("band_names") or [f"band_{i}" for i in range(num_bands)])
    return [BandSpec(name=n, units=str(cfg.get("input_units", ""))) for n in names]


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name).lower()


def match_names(raster_names: list[str], specs: list[BandSpec], source: str) -> list[int] | None:
    """Raster band index per model band, by name or alias; None when no name matches at all.

    Raises UnitsError when some match and some do not, or a model band matches twice.
    """
    index: dict[str, list[int]] = {}
    for i, n in enumerate(raster_names):
        if n:
            index.setdefault(_key(n), []).append(i)
    picked: list[int | None] = []
    for spec in specs:
        hits = sorted({i for k in (spec.name, *spec.aliases) for i in index.get(_key(k), [])})
        if len(hits) > 1:
            raise UnitsError(
                f"{source}: bands {hits} all name the model's band {spec.name}",
                "AMBIGUOUS_BAND_NAMES", {"model_band": spec.name, "raster_bands": str(hits)})
        picked.append(hits[0] if hits else None)
    if all(p is None for p in picked):
        return None
    missing = [s.name for s, p in zip(specs, picked) if p is None]
    if missing:
        raise UnitsError(
            f"{source} ({', '.join(repr(n) for n in raster_names)}) name no band for the model's "
            f"{', '.join(missing)}; the model needs {_describe(specs)}",
            "MISSING_BANDS", {"missing": ", ".join(missing), "raster_band_names": ", ".join(raster_names),
                              "expected": _describe(specs)})
    return [int(p) for p in picked]  # type: ignore[arg-type]


def _describe(specs: list[BandSpec]) -> str:
    return ", ".join(s.name + (f" ({'/'.join(s.aliases)})" if s.aliases else "") for s in specs)


@dataclass
class BandPlan:
    """Raster band per model band, and the per-band affine to the model's stored units."""

    bands: list[int]
    gain: np.ndarray  # float64 [len(bands)]
    bias: np.ndarray
    order_source: str  # "bands", "band_names", "descriptions" or "positional"
    conversion: str = ""  # what was done to the values; "" when nothing
    stated: bool = False  # units came from the request or the file (detection off)
    notes: list[str] = field(default_factory=list)


def per_band(values: list[float], raster_bands: int, what: str) -> list[float] | None:
    if not values:
        return None
    if len(values) == 1:
        return values * raster_bands
    if len(values) != raster_bands:
        raise UnitsError(f"{what} has {len(values)} values; give one, or one per raster band ({raster_bands})",
                         "BAD_SCALE_OFFSET", {"field": what, "values": str(len(values)),
                                              "raster_bands": str(raster_bands)})
    return list(values)


def plan_units(specs: list[BandSpec], bands: list[int], raster_scale: list[float] | None,
               raster_offset: list[float] | None, sample: np.ndarray | None, is_float: bool,
               order_source: str, mean: np.ndarray, std: np.ndarray) -> BandPlan:
    """Decide the conversion from a sample of the raster (``sample``: [len(bands), n] valid values, float64).

    ``raster_scale``/``raster_offset``: per raster band, from the request or the file (None: unstated).
    """
    n = len(bands)
    gain = np.ones(n)
    bias = np.zeros(n)
    plan = BandPlan(bands=bands, gain=gain, bias=bias, order_source=order_source)
    model_scale = np.array([s.scale for s in specs])
    model_offset = np.array([s.offset for s in specs])
    if raster_scale is not None or raster_offset is not None:
        rs = np.array([(raster_scale or [1.0] * (max(bands) + 1))[b] for b in bands])
        ro = np.array([(raster_offset or [0.0] * (max(bands) + 1))[b] for b in bands])
        # model stored = (raw * rs + ro - model_offset) / model_scale
        plan.gain[:] = rs / model_scale
        plan.bias[:] = (ro - model_offset) / model_scale
        plan.stated = True
        if not (np.allclose(plan.gain, 1.0) and np.allclose(plan.bias, 0.0)):
            plan.conversion = "stated scale/offset applied: " + ", ".join(
                f"{s.name} x {g:.6g} {'+' if b >= 0 else '-'} {abs(b):.6g}" for s, g, b in zip(specs, gain, bias))
    if sample is None or sample.shape[1] == 0:
        return plan
    expects_scaled = all(s.valid_range is not None and s.valid_range[1] >= 100 for s in specs)
    if not plan.stated and is_float and expects_scaled:
        lo, hi = float(sample.min()), float(sample.max())
        if FLOAT_REFLECTANCE_RANGE[0] <= lo and hi <= FLOAT_REFLECTANCE_RANGE[1]:
            plan.gain[:] = 1.0 / model_scale
            plan.bias[:] = -model_offset / model_scale
            plan.conversion = (f"float values {lo:.3g}..{hi:.3g} read as reflectance 0..1 (rule 3): "
                               f"x {plan.gain[0]:.6g} to the model's {specs[0].units or 'units'}")
    converted = sample * plan.gain[:, None] + plan.bias[:, None]
    declared = all(s.valid_range is not None for s in specs)  # a config without units: no detection
    if declared and not plan.stated and not plan.conversion:
        dark = np.quantile(converted, DARK_QUANTILE, axis=1) * model_scale + model_offset
        if (dark >= DARK_FLOOR).all():
            raise UnitsError(
                "the raster has no dark pixels: the darkest 0.1 % of every band is at or above "
                f"{DARK_FLOOR} reflectance ({', '.join(f'{s.name} {d:.3g}' for s, d in zip(specs, dark))}), "
                "which surface reflectance never is and an offset (e.g. Sentinel-2 L2A's +1000 digital "
                "numbers) is; state the units: scale/offset (Sentinel-2 L2A from baseline 04.00: scale "
                "0.0001, offset -0.1; values already in the model's units: scale "
                f"{specs[0].scale:g}, offset {specs[0].offset:g})",
                "VALUES_LOOK_OFFSET",
                {"expected": f"{specs[0].units or 'model units'}, darkest pixels below {DARK_FLOOR}",
                 "seen": ", ".join(f"{s.name}={d:.4g}" for s, d in zip(specs, dark))})
    bad = []
    for i, s in enumerate(specs):
        if s.valid_range is None:
            continue
        lo, hi = s.valid_range
        v = converted[i]
        outside = float(np.count_nonzero((v < lo) | (v > hi))) / v.size
        if outside > OUT_OF_RANGE_TOLERANCE:
            q = np.quantile(v, [0.01, 0.99])
            bad.append((s, outside, float(v.min()), float(v.max()), q))
    if bad:
        s, frac, vmin, vmax, q = bad[0]
        how = f" after {plan.conversion}" if plan.conversion else ""
        raise UnitsError(
            f"band {s.name} (raster band {bands[specs.index(s)]}): {frac:.0%} of its values lie outside the "
            f"model's valid range {s.valid_range[0]:g}..{s.valid_range[1]:g} ({s.units or 'model units'}){how}; "  # type: ignore[index]
            f"seen {vmin:.6g}..{vmax:.6g} (1st-99th percentile {q[0]:.6g}..{q[1]:.6g}). State what the raster "
            "holds with scale/offset (physical = stored * scale + offset)",
            "VALUES_OUT_OF_RANGE",
            {"bands": ", ".join(b[0].name for b in bad),
             "expected": "; ".join(f"{b[0].name} {b[0].valid_range[0]:g}..{b[0].valid_range[1]:g}"  # type: ignore[index]
                                   for b in bad) + f" ({s.units})",
             "seen": "; ".join(f"{b[0].name} {b[2]:.6g}..{b[3]:.6g}" for b in bad),
             "conversion": plan.conversion or "none"})
    if order_source == "positional" and n > 1 and n <= 8:
        _check_order(specs, converted, mean, std)
    return plan


def _check_order(specs: list[BandSpec], converted: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Rule 6: refuse when another band order fits the model's band statistics far better."""
    m = converted.mean(axis=1)
    z = lambda perm: float(np.sum(((m[list(perm)] - mean) / std) ** 2))  # noqa: E731
    ident = z(range(len(m)))
    if ident <= ORDER_MIN_DISTANCE:
        return
    best = min(itertools.permutations(range(len(m))), key=z)
    if ident > ORDER_RATIO * z(best):
        names = [s.name for s in specs]
        raise UnitsError(
            "the raster's bands look out of order: their means fit the model's per-band statistics far "
            f"better read as raster bands {list(best)} for {names}; the raster has no band descriptions, so "
            "say which band is which with band_names (or bands, zero-based raster indices in the model's order)",
            "BANDS_OUT_OF_ORDER",
            {"expected": ", ".join(names), "likely_raster_bands": str(list(best)),
             "band_means": ", ".join(f"{v:.4g}" for v in m)})
