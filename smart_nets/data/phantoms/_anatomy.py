"""The patient: body habitus, lungs and diaphragm, heart, great vessels, abdominal organs, skeleton, couch.

Every size, shape and position is drawn per case. Organs get an organ label (:data:`ORGAN_LABELS`, fixed ids) and a
finer tissue class (:class:`Tissue`: kidney cortex and medulla, heart blood pool and myocardium, vessels, fat...) that
:mod:`._intensity` turns into Hounsfield units for the case's contrast phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ._geometry import Canvas, blob, branches, tube

ORGAN_LABELS = {
    0: "background",
    1: "lung_left",
    2: "lung_right",
    3: "heart",
    4: "aorta",
    5: "liver",
    6: "spleen",
    7: "kidney_left",
    8: "kidney_right",
    9: "spine",
    10: "ribs",
    11: "tumour",
}
ID = {name: i for i, name in ORGAN_LABELS.items()}
LUNGS = (ID["lung_left"], ID["lung_right"])


class Tissue(IntEnum):
    """Tissue classes: what a voxel is made of, finer than its organ label."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    VISCERAL = 3  # mediastinal and abdominal soft tissue: a per-case mix of fat and bowel-like tissue
    LUNG = 4
    PULMONARY_VESSEL = 5
    MYOCARDIUM = 6
    BLOOD_POOL = 7
    AORTA = 8
    IVC = 9
    LIVER = 10
    LIVER_VESSEL = 11
    SPLEEN = 12
    KIDNEY_CORTEX = 13
    KIDNEY_MEDULLA = 14
    CORTICAL_BONE = 15
    MARROW = 16
    DISC = 17
    RIB = 18
    GUT_WALL = 19
    FLUID = 20
    GAS = 21
    COUCH = 22
    CSF = 23


@dataclass
class Habitus:
    """Per-case body parameters, drawn before the grid because they bound the patient's offset in the field of view.

    Attributes:
        a: half width of the body (mm).
        b: half anterior-posterior depth (mm).
        squareness: superellipse exponent of the body outline (2 = ellipse).
        back: depth of the back relative to the front (the patient lies on it).
        fat: subcutaneous fat thickness (mm).
        muscle: muscle wall thickness (mm).
        taper: relative change of the body width per 100 mm towards the head.
        scale: organ size factor.
        visceral_fat: bias of the fat share of visceral and mediastinal tissue (positive = more fat).
        offset: ``(u, v, w)`` position of the patient's centre in the field of view (mm).
    """

    a: float
    b: float
    squareness: float
    back: float
    fat: float
    muscle: float
    taper: float
    scale: float
    visceral_fat: float
    offset: tuple[float, float, float]

    @property
    def inner(self) -> tuple[float, float]:
        """Half axes of the body cavity (inside fat and muscle), mm."""
        return self.a - self.fat - self.muscle, self.b - 0.8 * self.fat - self.muscle


def draw_habitus(rng: np.random.Generator) -> Habitus:
    """Draw a body: thin to obese, narrow to broad, placed off-centre in the field of view."""
    a = rng.uniform(105.0, 155.0)
    fat = 4.0 + max(a - 110.0, 0.0) * 0.4 + rng.uniform(0.0, 12.0)
    lean = a - fat
    b = a * rng.uniform(0.62, 0.8)
    room_u, room_v = max(0.0, 154.0 - 1.06 * a), max(0.0, 148.0 - b)
    offset = (rng.uniform(-1, 1) * min(35.0, room_u), rng.uniform(-1, 1) * min(30.0, room_v), rng.uniform(-40, 40))
    return Habitus(
        a=a,
        b=b,
        squareness=rng.uniform(2.0, 2.6),
        back=rng.uniform(0.85, 0.95),
        fat=fat,
        muscle=rng.uniform(8.0, 15.0),
        taper=rng.uniform(-0.03, 0.03),
        scale=lean / 115.0 * rng.uniform(0.94, 1.06),
        visceral_fat=(fat - 16.0) / 10.0 + rng.normal(0.0, 0.5),
        offset=offset,
    )


@dataclass
class Anatomy:
    """What later steps (vessels, tumours, properties) need to know about the drawn patient.

    Attributes:
        inner: ``(X, Y, Z)`` bool, the body cavity inside the muscle wall.
        dome: ``(X, Y)`` height (w, mm) of the diaphragm over each column.
        diaphragm_mm: height of the left dome's base in patient coordinates.
        mediastinum_mm: half width of the mediastinum.
        inflation: lung inflation factor (lung size, 1 = average).
        spine_v: anterior-posterior position of the vertebral bodies' centre (mm).
    """

    inner: np.ndarray
    dome: np.ndarray
    diaphragm_mm: float
    mediastinum_mm: float
    inflation: float
    spine_v: float


def draw_anatomy(c: Canvas, rng: np.random.Generator, h: Habitus) -> Anatomy:
    """Draw the whole patient on ``c`` (labels and tissue classes) and return its landmarks."""
    inner = _body(c, h)
    dome, w0 = _diaphragm(c, h, rng, inner)
    inflation = float(rng.uniform(0.85, 1.12))
    m = float(rng.uniform(18.0, 32.0) * h.scale)
    spine_v = -h.inner[1] + rng.uniform(24.0, 34.0) * h.scale
    anatomy = Anatomy(inner, dome, w0, m, inflation, spine_v)
    _lungs(c, rng, h, anatomy)
    heart = _heart(c, rng, h, anatomy)
    _liver_and_spleen(c, rng, h, anatomy)
    _stomach(c, rng, h, anatomy)
    for side in (1.0, -1.0):
        _kidney(c, rng, h, anatomy, side)
    _great_vessels(c, rng, h, anatomy, heart)
    _spine(c, rng, h, anatomy)
    _ribs(c, rng, h, anatomy)
    _pulmonary_vessels(c, rng, anatomy)
    _liver_vessels(c, rng)
    _couch(c, rng, h)
    return anatomy


def _outline(c: Canvas, h: Habitus, inset_u: float, inset_v: float, w: np.ndarray | None = None) -> np.ndarray:
    """``(X, Y, Z)`` inside of the body outline moved ``inset_u`` mm in from the sides and ``inset_v`` mm from the front
    and back: a superellipse, flatter at the back, widening or narrowing towards the head (``taper``). ``w``: the
    slices' heights, if not all of them."""
    u, v, w = c.u[:, :, 0], c.v[0, :, 0][None, :], c.w if w is None else w
    a, b = h.a - inset_u, np.where(v >= 0, h.b, h.back * h.b) - inset_v
    radius = ((np.abs(u) / a) ** h.squareness + (np.abs(v) / b) ** h.squareness) ** (1.0 / h.squareness)
    return radius[..., None] <= 1.0 + h.taper * w / 100.0


def _body(c: Canvas, h: Habitus) -> np.ndarray:
    """Subcutaneous fat, the muscle wall and the body cavity (visceral tissue); returns the cavity mask."""
    c.tissue[_outline(c, h, 0.0, 0.0)] = Tissue.FAT
    c.tissue[_outline(c, h, h.fat, 0.8 * h.fat)] = Tissue.MUSCLE
    inner = _outline(c, h, h.fat + h.muscle, 0.8 * h.fat + h.muscle)
    c.tissue[inner] = Tissue.VISCERAL
    return inner


def _diaphragm(c: Canvas, h: Habitus, rng: np.random.Generator, inner: np.ndarray) -> tuple[np.ndarray, float]:
    """Two domes (the right usually higher), lower at the back; a muscle band along them. Returns ``(dome, w0)``."""
    w0 = float(rng.uniform(-55.0, -5.0))
    right = w0 + rng.uniform(0.0, 20.0)
    height, slope, width = rng.uniform(15.0, 35.0), rng.uniform(0.1, 0.3), h.inner[0]
    u, v = c.u[:, :, 0], c.v[0, :, 0][None, :]
    bump = np.clip(1.0 - ((np.abs(u) - 0.45 * width) / (0.45 * width)) ** 2, 0.0, 1.0)
    dome = (np.where(u < 0, right, w0) + height * bump + slope * v).astype(np.float32)
    band = inner & (c.w <= dome[..., None]) & (c.w > dome[..., None] - 5.0)
    c.tissue[band] = Tissue.MUSCLE
    return dome, w0


def _below(c: Canvas, a: Anatomy, box: tuple[slice, ...], margin: float) -> np.ndarray:
    """Voxels of ``box`` at least ``margin`` mm below the diaphragm (negative margin: above it by that much)."""
    return c.w[:, :, box[2]] < a.dome[box[0], box[1]][..., None] - margin


def _lungs(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy) -> None:
    """Two lungs filling the chest beside the mediastinum down to the domes; size follows the inflation."""
    width, depth = h.inner
    grow = a.inflation ** (1.0 / 3.0)
    for name, side in (("lung_left", 1.0), ("lung_right", -1.0)):
        half = (width - a.mediastinum_mm) / 2.0
        centre = (side * (a.mediastinum_mm + half), depth * rng.uniform(-0.15, 0.0), a.diaphragm_mm + 100 * a.inflation)
        radii = (half * rng.uniform(1.05, 1.2) * grow, depth * rng.uniform(0.88, 1.0) * grow, 150.0 * a.inflation)
        lung = blob(c, rng, centre, radii, (rng.uniform(-8, 8), 0.0, 0.0), wobble=0.05)
        mask = lung.mask & a.inner[lung.box] & ~_below(c, a, lung.box, 0.0)
        c.paint(lung.box, mask, Tissue.LUNG, ID[name])


def _heart(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy) -> np.ndarray:
    """Myocardium around two blood-pool chambers split by a septum, on the diaphragm, left and anterior; returns its
    centre and radii as one array ``(u, v, w, ru, rv, rw)``."""
    s = h.scale
    radii = np.array([rng.uniform(50, 62) * s, rng.uniform(38, 48) * s, rng.uniform(42, 55) * s])
    centre = np.array(
        [rng.uniform(8, 30) * s, h.inner[1] - radii[1] * rng.uniform(0.8, 1.0), a.diaphragm_mm + 0.85 * radii[2]]
    )
    heart = blob(c, rng, centre, radii, (rng.uniform(20, 45), rng.uniform(-15, 5), 0.0), wobble=0.05)
    inside = heart.mask & a.inner[heart.box] & ~_below(c, a, heart.box, 5.0)
    c.paint(heart.box, inside, Tissue.MYOCARDIUM, ID["heart"])
    chambers = inside & (heart.radius < rng.uniform(0.68, 0.78)) & (np.abs(heart.local[0]) > rng.uniform(3, 6))
    c.paint(heart.box, chambers, Tissue.BLOOD_POOL)
    fat = (heart.radius > 1.0) & (heart.radius < 1.0 + 5.0 / radii.min()) & (c.labels[heart.box] == 0)
    c.paint(heart.box, fat & a.inner[heart.box], Tissue.FAT)
    return np.concatenate([centre, radii])


def _stomach(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy) -> None:
    """A stomach under the left dome (unlabelled): wall, fluid, and a gas cap at the front when there is gas."""
    width, depth = h.inner
    r = np.array([rng.uniform(28, 42), rng.uniform(26, 38), rng.uniform(32, 48)]) * h.scale
    centre = (width * rng.uniform(0.25, 0.45), depth * rng.uniform(0.05, 0.3), a.diaphragm_mm - r[2] * 0.9)
    st = blob(c, rng, centre, r, (rng.uniform(-30, 30), 0.0, 0.0), wobble=0.1)
    free = st.mask & (c.labels[st.box] == 0) & a.inner[st.box] & _below(c, a, st.box, 8.0)
    c.paint(st.box, free, Tissue.GUT_WALL)
    lumen = free & (st.radius < 1.0 - 4.0 / r.min())
    c.paint(st.box, lumen, Tissue.FLUID)
    if rng.random() < 0.6:  # supine: gas rises to the front
        c.paint(st.box, lumen & (st.local[1] > r[1] * rng.uniform(-0.2, 0.6)), Tissue.GAS)


def _liver_and_spleen(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy) -> None:
    """Liver (a right lobe and a left lobe reaching across the midline) and spleen, both under the domes."""
    width, depth = h.inner
    s = h.scale * rng.uniform(0.85, 1.15)
    right_r = (width * 0.55 * rng.uniform(0.85, 1.1), depth * 0.8 * rng.uniform(0.85, 1.05), rng.uniform(60, 90) * s)
    right_c = (
        -width * 0.42 * rng.uniform(0.85, 1.1),
        depth * rng.uniform(-0.1, 0.15),
        a.diaphragm_mm - 0.55 * right_r[2],
    )
    left_r = (width * rng.uniform(0.35, 0.5), depth * rng.uniform(0.35, 0.5), rng.uniform(30, 45) * s)
    left_c = (width * rng.uniform(-0.05, 0.2), depth * rng.uniform(0.3, 0.5), a.diaphragm_mm - rng.uniform(15, 35))
    for centre, radii in ((right_c, right_r), (left_c, left_r)):
        lobe = blob(c, rng, centre, radii, (rng.uniform(-15, 15), rng.uniform(-10, 10), 0.0), wobble=0.08)
        mask = lobe.mask & a.inner[lobe.box] & _below(c, a, lobe.box, 5.0) & (c.labels[lobe.box] == 0)
        c.paint(lobe.box, mask, Tissue.LIVER, ID["liver"])
    s = h.scale * rng.uniform(0.8, 1.2)
    radii = (rng.uniform(20, 32) * s, rng.uniform(38, 55) * s, rng.uniform(38, 55) * s)
    centre = (width * rng.uniform(0.6, 0.75), -depth * rng.uniform(0.3, 0.55), a.diaphragm_mm - rng.uniform(25, 45))
    spleen = blob(c, rng, centre, radii, (rng.uniform(-40, -10), rng.uniform(-10, 10), 0.0), wobble=0.1)
    mask = spleen.mask & a.inner[spleen.box] & _below(c, a, spleen.box, 5.0) & (c.labels[spleen.box] == 0)
    c.paint(spleen.box, mask, Tissue.SPLEEN, ID["spleen"])


def _kidney(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy, side: float) -> None:
    """A bean-shaped kidney beside the spine: cortex with columns reaching in between medullary pyramids, and a sinus
    (fat, unlabelled) opening towards the spine."""
    s = h.scale * rng.uniform(0.85, 1.15)
    radii = np.array([rng.uniform(22, 28), rng.uniform(26, 34), rng.uniform(45, 58)]) * s
    column = (int(np.argmin(np.abs(c.axes[0] - side * 60.0))), int(np.argmin(np.abs(c.axes[1] - a.spine_v))))
    top = float(a.dome[column])  # the dome over the kidney: the right kidney sits lower, under the liver
    centre = (side * rng.uniform(48, 68) * s, a.spine_v + rng.uniform(0, 15), top - rng.uniform(80, 115))
    angles = (side * rng.uniform(20, 35), rng.uniform(-15, 15), side * rng.uniform(5, 15))
    kid = blob(c, rng, centre, radii, angles, wobble=0.04)
    mask = kid.mask & a.inner[kid.box]
    name = "kidney_left" if side > 0 else "kidney_right"
    c.paint(kid.box, mask, Tissue.KIDNEY_CORTEX, ID[name])
    lu, _, lw = kid.local
    theta = np.arctan2(lw / radii[2], -side * lu / radii[0])
    pyramids = np.cos(rng.integers(6, 9) * theta + rng.uniform(0, 2 * np.pi)) > -0.4
    cortex = rng.uniform(5.0, 8.0) / radii.min()
    c.paint(kid.box, mask & (kid.radius < 1.0 - cortex) & (kid.radius > 0.4) & pyramids, Tissue.KIDNEY_MEDULLA)
    sinus = mask & (-side * lu > 0.2 * radii[0]) & (kid.radius < rng.uniform(0.6, 0.75))
    c.paint(kid.box, sinus, Tissue.FAT, 0)


def _great_vessels(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy, heart: np.ndarray) -> None:
    """Aorta (root, ascending, arch, descending beside the spine) and the inferior vena cava (unlabelled)."""
    s, radius = h.scale, rng.uniform(10.0, 14.0) * h.scale
    top = heart[2] + heart[5] + rng.uniform(15, 35)
    desc = np.array([rng.uniform(10, 25) * s, a.spine_v + rng.uniform(18, 26) * s + radius, top])
    asc = np.array([rng.uniform(-5, 12) * s, heart[1] - rng.uniform(0, 15), top + rng.uniform(5, 15)])
    root = np.array([heart[0] * 0.4, heart[1] - 0.2 * heart[4], heart[2] + 0.3 * heart[5]])
    for p0, p1, r in ((desc - [0, 0, 500], desc, radius), (desc, asc, radius), (asc, root, 1.15 * radius)):
        box, mask = tube(c, p0, p1, r)
        mask &= a.inner[box] & (c.labels[box] != ID["spine"])
        c.paint(box, mask, Tissue.AORTA, ID["aorta"])
    ivc = np.array([-rng.uniform(14, 26) * s, a.spine_v + rng.uniform(20, 30) * s, a.diaphragm_mm + 10.0])
    box, mask = tube(c, ivc - [0, 0, 500], ivc, rng.uniform(9.0, 12.0) * s)
    mask &= a.inner[box] & np.isin(c.labels[box], (0, ID["liver"]))
    c.paint(box, mask, Tissue.IVC, 0)


def _spine(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy) -> None:
    """Vertebral bodies (cortical shell, marrow) between discs, spinous processes, and the spinal canal."""
    s = h.scale
    radius = rng.uniform(15.0, 19.0) * s
    period, disc = rng.uniform(26.0, 32.0), rng.uniform(5.0, 8.0)
    u, v = c.u, c.v - a.spine_v
    body = np.broadcast_to(u**2 + v**2 <= radius**2, c.shape)
    discs = np.broadcast_to((c.w - rng.uniform(0, period)) % period < disc, c.shape)
    canal_v = -radius - rng.uniform(7.0, 9.0)
    canal = u**2 + (v - canal_v) ** 2 <= (rng.uniform(6.0, 8.0) * s) ** 2
    arch = np.broadcast_to((u**2 + (v - canal_v) ** 2 <= (radius * 0.75) ** 2) & ~canal, c.shape)
    process = np.broadcast_to((np.abs(u) < 4.0 * s) & (v < canal_v) & (v > canal_v - 32.0 * s), c.shape)
    c.paint(slice(None), (body & ~discs), Tissue.CORTICAL_BONE, ID["spine"])
    c.paint(slice(None), (arch & ~discs) | process, Tissue.RIB, ID["spine"])  # thin bone, as dense as a rib
    marrow = body & ~discs & np.broadcast_to(u**2 + v**2 <= (radius - 2.5) ** 2, c.shape)
    c.paint(slice(None), marrow, Tissue.MARROW)
    c.paint(slice(None), body & discs, Tissue.DISC, 0)
    c.paint(slice(None), np.broadcast_to(canal, c.shape), Tissue.CSF, 0)


def _ribs(c: Canvas, rng: np.random.Generator, h: Habitus, a: Anatomy) -> None:
    """Rib arcs in the inner part of the muscle wall, sloping down anteriorly, with gaps at the spine and sternum."""
    chest = c.box((-1e3, -1e3, a.diaphragm_mm - 40.0), (1e3, 1e3, 1e3))
    w = c.w[:, :, chest[2]]  # the outlines over the chest's slices only
    inset, thick = h.fat + 0.4 * h.muscle, rng.uniform(6.0, 9.0)
    ring = _outline(c, h, inset, inset, w) & ~_outline(c, h, inset + thick, inset + thick, w)
    period, width, slope = rng.uniform(24.0, 30.0), rng.uniform(7.0, 10.0), rng.uniform(0.2, 0.45)
    level = (w - a.diaphragm_mm + slope * c.v) % period < width
    ribs = ring & level & (np.abs(c.u) > 25.0) & (c.v < 0.55 * h.b)
    region = (slice(None), slice(None), chest[2])
    ribs &= (c.labels[region] == 0) & (c.tissue[region] != Tissue.AIR)
    c.paint(region, ribs, Tissue.RIB, ID["ribs"])


def _pulmonary_vessels(c: Canvas, rng: np.random.Generator, a: Anatomy) -> None:
    """Pulmonary arteries from the mediastinum to each hilum, then branching trees inside the lung (labelled lung)."""
    for name, side in (("lung_left", 1.0), ("lung_right", -1.0)):
        hilum = np.array([side * (a.mediastinum_mm + rng.uniform(5, 20)), rng.uniform(-15, 10), 0.0])
        hilum[2] = a.diaphragm_mm + rng.uniform(50, 80) * a.inflation
        start = hilum - [side * (a.mediastinum_mm + 10.0), 0.0, 0.0]
        box, mask = tube(c, start, hilum, rng.uniform(6.0, 9.0))
        c.paint(box, mask & np.isin(c.tissue[box], (Tissue.VISCERAL, Tissue.FAT, Tissue.LUNG)), Tissue.PULMONARY_VESSEL)
        for _ in range(int(rng.integers(9, 13))):  # lobar arteries fanning out over the lateral half-sphere
            direction = np.array([side * rng.uniform(0.3, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.3)])
            for p0, p1, radius in branches(rng, hilum, direction, rng.uniform(40, 55), rng.uniform(3.0, 4.5), 3):
                box, mask = tube(c, p0, p1, radius)
                c.paint(box, mask & (c.labels[box] == ID[name]), Tissue.PULMONARY_VESSEL)


def _liver_vessels(c: Canvas, rng: np.random.Generator) -> None:
    """Portal and hepatic vein branches inside the liver (labelled liver)."""
    liver = np.argwhere(c.labels[:, :, ::2] == ID["liver"])
    if len(liver) == 0:
        return
    centre = c.point(liver.mean(axis=0) * [1, 1, 2])
    for _ in range(3):
        direction = rng.normal(size=3)
        for p0, p1, radius in branches(rng, centre, direction, rng.uniform(30, 45), rng.uniform(4.0, 6.0), 2):
            box, mask = tube(c, p0, p1, radius)
            c.paint(box, mask & (c.labels[box] == ID["liver"]), Tissue.LIVER_VESSEL)


def _couch(c: Canvas, rng: np.random.Generator, h: Habitus) -> None:
    """The table the patient lies on: a curved slab under the back, reaching the edges of the field of view."""
    top = -h.b * rng.uniform(0.85, 0.95) - rng.uniform(2.0, 12.0) + 0.0012 * c.u**2
    slab = (c.v < top) & (c.v > top - rng.uniform(10.0, 16.0)) & (c.tissue == Tissue.AIR)
    c.paint(slice(None), slab, Tissue.COUCH)
