"""The CRS a GeoTIFF's GeoKeys describe, as a string a client can use exactly.

- An EPSG projected or geographic CRS code -> ``"EPSG:<code>"``.
- Anything user-defined (GDAL writes ProjectedCSTypeGeoKey = 32767 with the
  projection method and its parameters in GeoKeys for a CRS that has no EPSG
  code) -> WKT2 (ISO 19162:2019), built from the keys with PROJ (pyproj):
  the geodetic datum/ellipsoid (EPSG codes or explicit axes), the projection
  (an EPSG conversion code, or the coordinate transformation method and its
  parameters) and the linear unit, the way libgeotiff maps them to PROJ.
- Keys that describe no CRS -> ``""``.

The output GeoTIFF does not depend on this: its GeoKeys are copied verbatim.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

USER_DEFINED = 32767
# GeoKey ids (GeoTIFF 1.1, OGC 19-008r4).
GT_MODEL_TYPE = 1024
GEOGRAPHIC_TYPE = 2048
GEOG_GEODETIC_DATUM = 2050
GEOG_PRIME_MERIDIAN = 2051
GEOG_ANGULAR_UNITS = 2054
GEOG_ELLIPSOID = 2056
GEOG_SEMI_MAJOR = 2057
GEOG_SEMI_MINOR = 2058
GEOG_INV_FLATTENING = 2059
GEOG_PRIME_MERIDIAN_LONG = 2061
PROJECTED_CS_TYPE = 3072
PROJECTION = 3074
PROJ_COORD_TRANS = 3075
PROJ_LINEAR_UNITS = 3076
PROJ_LINEAR_UNIT_SIZE = 3077
STD_PARALLEL_1, STD_PARALLEL_2 = 3078, 3079
NAT_ORIGIN_LONG, NAT_ORIGIN_LAT = 3080, 3081
FALSE_EASTING, FALSE_NORTHING = 3082, 3083
FALSE_ORIGIN_LONG, FALSE_ORIGIN_LAT = 3084, 3085
FALSE_ORIGIN_EASTING, FALSE_ORIGIN_NORTHING = 3086, 3087
CENTER_LONG, CENTER_LAT = 3088, 3089
CENTER_EASTING, CENTER_NORTHING = 3090, 3091
SCALE_AT_NAT_ORIGIN, SCALE_AT_CENTER = 3092, 3093
AZIMUTH_ANGLE, STRAIGHT_VERT_POLE_LONG = 3094, 3095
MODEL_TYPE_GEOGRAPHIC = 2

# Linear units (EPSG unit codes) -> metres.
_LINEAR_UNITS = {9001: 1.0, 9002: 0.3048, 9003: 1200.0 / 3937.0, 9036: 1000.0}
# Angular units -> degrees.
_ANGULAR_UNITS = {9102: 1.0, 9101: 57.29577951308232, 9105: 0.9, 9106: 0.9, 9122: 1.0}


def _first(keys: dict[int, Any], *ids: int) -> float | None:
    for k in ids:
        v = keys.get(k)
        if isinstance(v, tuple) and v:
            return float(v[0])
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _param(keys: dict[int, Any], *ids: int, default: float = 0.0) -> float:
    v = _first(keys, *ids)
    return default if v is None else v


# ProjCoordTransGeoKey -> (PROJ projection, parameter rule). Parameters follow libgeotiff's
# GTIFGetProj4Defn: the keys GDAL writes for each method, with their natural-origin /
# false-origin / centre variants as fallbacks.
def _proj_params(ct: int, k: dict[int, Any]) -> list[str] | None:
    lat0 = _param(k, NAT_ORIGIN_LAT, FALSE_ORIGIN_LAT, CENTER_LAT)
    lon0 = _param(k, NAT_ORIGIN_LONG, FALSE_ORIGIN_LONG, CENTER_LONG)
    fe = _param(k, FALSE_EASTING, FALSE_ORIGIN_EASTING, CENTER_EASTING)
    fn = _param(k, FALSE_NORTHING, FALSE_ORIGIN_NORTHING, CENTER_NORTHING)
    k0 = _param(k, SCALE_AT_NAT_ORIGIN, SCALE_AT_CENTER, default=1.0)
    sp1, sp2 = _param(k, STD_PARALLEL_1), _param(k, STD_PARALLEL_2)
    common = [f"+x_0={fe!r}", f"+y_0={fn!r}"]
    if ct == 1:  # Transverse Mercator
        return ["+proj=tmerc", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", f"+k={k0!r}", *common]
    if ct == 7:  # Mercator (1SP; 2SP when a standard parallel is given)
        if _first(k, STD_PARALLEL_1) is not None:
            return ["+proj=merc", f"+lat_ts={sp1!r}", f"+lon_0={lon0!r}", *common]
        return ["+proj=merc", f"+lon_0={lon0!r}", f"+k={k0!r}", *common]
    if ct == 8:  # Lambert conformal conic 2SP
        return ["+proj=lcc", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", f"+lat_1={sp1!r}", f"+lat_2={sp2!r}", *common]
    if ct == 9:  # Lambert conformal conic 1SP
        return ["+proj=lcc", f"+lat_1={lat0!r}", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", f"+k_0={k0!r}", *common]
    if ct == 10:  # Lambert azimuthal equal area
        return ["+proj=laea", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", *common]
    if ct == 11:  # Albers equal area
        return ["+proj=aea", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", f"+lat_1={sp1!r}", f"+lat_2={sp2!r}", *common]
    if ct == 12:  # Azimuthal equidistant
        return ["+proj=aeqd", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", *common]
    if ct == 13:  # Equidistant conic
        return ["+proj=eqdc", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", f"+lat_1={sp1!r}", f"+lat_2={sp2!r}", *common]
    if ct == 14:  # Stereographic
        return ["+proj=stere", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", f"+k={k0!r}", *common]
    if ct == 15:  # Polar stereographic
        lat_ts = _param(k, NAT_ORIGIN_LAT)
        pole = 90.0 if lat_ts >= 0 else -90.0
        lon = _param(k, STRAIGHT_VERT_POLE_LONG, NAT_ORIGIN_LONG)
        return ["+proj=stere", f"+lat_0={pole!r}", f"+lat_ts={lat_ts!r}", f"+lon_0={lon!r}", f"+k={k0!r}", *common]
    if ct == 16:  # Oblique stereographic
        return ["+proj=sterea", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", f"+k={k0!r}", *common]
    if ct == 17:  # Equirectangular
        return ["+proj=eqc", f"+lat_ts={sp1!r}", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", *common]
    if ct == 18:  # Cassini-Soldner
        return ["+proj=cass", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", *common]
    if ct == 21:  # Orthographic
        return ["+proj=ortho", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", *common]
    if ct == 22:  # Polyconic
        return ["+proj=poly", f"+lat_0={lat0!r}", f"+lon_0={lon0!r}", *common]
    if ct == 24:  # Sinusoidal
        return ["+proj=sinu", f"+lon_0={lon0!r}", *common]
    if ct in (3, 4, 5):  # Hotine oblique Mercator (variants A/B: libgeotiff maps both to omerc)
        alpha = _param(k, AZIMUTH_ANGLE)
        return ["+proj=omerc", f"+lat_0={lat0!r}", f"+lonc={lon0!r}", f"+alpha={alpha!r}", f"+k={k0!r}",
                *common] + (["+no_uoff"] if ct == 3 else [])
    return None


def _geodetic(keys: dict[int, Any]) -> Any:
    """The geodetic CRS as a pyproj CRS (EPSG code, datum code, or ellipsoid)."""
    from pyproj import CRS

    gcs = keys.get(GEOGRAPHIC_TYPE)
    if isinstance(gcs, int) and 0 < gcs < USER_DEFINED:
        return CRS.from_epsg(gcs)
    datum = keys.get(GEOG_GEODETIC_DATUM)
    if isinstance(datum, int) and 0 < datum < USER_DEFINED:
        from pyproj.crs import GeographicCRS
        from pyproj.crs.datum import Datum

        return GeographicCRS(datum=Datum.from_epsg(datum))
    parts = ["+proj=longlat"]
    ell = keys.get(GEOG_ELLIPSOID)
    a, b, rf = _first(keys, GEOG_SEMI_MAJOR), _first(keys, GEOG_SEMI_MINOR), _first(keys, GEOG_INV_FLATTENING)
    if isinstance(ell, int) and 0 < ell < USER_DEFINED:
        from pyproj.crs import GeographicCRS
        from pyproj.crs.datum import CustomDatum, Ellipsoid

        ellipsoid = Ellipsoid.from_epsg(ell)
        # GDAL's name for a datum known only by its ellipsoid (so both read the same).
        return GeographicCRS(name="unknown", datum=CustomDatum(
            name=f"Unknown based on {ellipsoid.name} ellipsoid", ellipsoid=ellipsoid))
    if a is not None and rf:
        parts += [f"+a={a!r}", f"+rf={rf!r}"]
    elif a is not None and b is not None:
        parts += [f"+a={a!r}", f"+b={b!r}"]
    elif a is not None:
        parts += [f"+R={a!r}"]
    else:
        return None
    pm = _first(keys, GEOG_PRIME_MERIDIAN_LONG)
    if pm:
        parts.append(f"+pm={pm!r}")
    return CRS.from_proj4(" ".join(parts + ["+no_defs", "+type=crs"]))


def crs_from_geokeys(keys: dict[int, Any], citation: str = "") -> str:
    """``"EPSG:n"``, WKT2 for a user-defined CRS, or ``""``; never a guess.

    ``citation`` (a citation GeoKey) is returned only when the keys name a
    user-defined CRS that cannot be built (pyproj missing, or a method this
    module does not map), so the caller still sees what the file says.
    """
    for key in (PROJECTED_CS_TYPE, GEOGRAPHIC_TYPE):
        code = keys.get(key)
        if isinstance(code, int) and 0 < code < USER_DEFINED:
            return f"EPSG:{code}"
    if not keys:
        return ""
    try:
        crs = _user_defined(keys)
    except Exception as e:  # noqa: BLE001 - pyproj raises CRSError and others for odd keys
        logger.debug("cannot build a CRS from GeoKeys %s: %s", keys, e)
        crs = None
    if crs is None:
        return citation
    return str(crs.to_wkt())


def _user_defined(keys: dict[int, Any]) -> Any:
    from pyproj import CRS
    from pyproj.crs import ProjectedCRS
    from pyproj.crs.coordinate_operation import CoordinateOperation

    geodetic = _geodetic(keys)
    if keys.get(GT_MODEL_TYPE) == MODEL_TYPE_GEOGRAPHIC or PROJECTED_CS_TYPE not in keys and \
            PROJ_COORD_TRANS not in keys and PROJECTION not in keys:
        return geodetic
    if geodetic is None:
        return None
    unit = keys.get(PROJ_LINEAR_UNITS)
    to_meter = _LINEAR_UNITS.get(unit) if isinstance(unit, int) else None
    if to_meter is None:
        to_meter = _first(keys, PROJ_LINEAR_UNIT_SIZE) or 1.0
    projection = keys.get(PROJECTION)
    if isinstance(projection, int) and 0 < projection < USER_DEFINED:
        conversion = CoordinateOperation.from_epsg(projection)
        return ProjectedCRS(conversion=conversion, geodetic_crs=geodetic)
    ct = keys.get(PROJ_COORD_TRANS)
    params = _proj_params(int(ct), keys) if isinstance(ct, int) else None
    if params is None:
        return None
    # Angular parameters are stored in the geographic angular unit.
    ang = keys.get(GEOG_ANGULAR_UNITS)
    deg = _ANGULAR_UNITS.get(ang, 1.0) if isinstance(ang, int) else 1.0
    if deg != 1.0:
        params = [_scale_angle(p, deg) for p in params]
    # False easting/northing are in the linear unit: PROJ's +x_0/+y_0 are metres.
    params = [_scale_linear(p, to_meter) for p in params]
    geod = CRS(geodetic).to_proj4() or ""
    datum_parts = [p for p in geod.split() if not p.startswith(("+proj=", "+type=", "+no_defs"))]
    units = ["+units=m"] if to_meter == 1.0 else [f"+to_meter={to_meter!r}"]
    proj4 = " ".join(params + datum_parts + units + ["+no_defs", "+type=crs"])
    projected = CRS.from_proj4(proj4)
    # Keep the geodetic CRS as declared (an EPSG datum keeps its name and identifiers).
    return ProjectedCRS(conversion=projected.coordinate_operation, geodetic_crs=geodetic,
                        cartesian_cs=projected.coordinate_system, name=_name(keys) or "unnamed")


def _name(keys: dict[int, Any]) -> str:
    for k in (3073, 1026):  # PCSCitationGeoKey, GTCitationGeoKey
        v = keys.get(k)
        if isinstance(v, str) and v.strip() and v.strip().lower() != "unknown":
            return v.strip()
    return ""


def _scale_angle(p: str, factor: float) -> str:
    for name in ("+lat_0=", "+lon_0=", "+lat_1=", "+lat_2=", "+lat_ts=", "+lonc=", "+alpha="):
        if p.startswith(name):
            return f"{name}{float(p[len(name):]) * factor!r}"
    return p


def _scale_linear(p: str, to_meter: float) -> str:
    for name in ("+x_0=", "+y_0="):
        if p.startswith(name):
            return f"{name}{float(p[len(name):]) * to_meter!r}"
    return p
