"""Synthetic chest/abdomen CT phantoms in Hounsfield units, with organ labels, lung-tumour masks and endpoints.

No public CT can be downloaded where this project is built and the SMART paper's cohorts are private, so tests, the
demo and the benchmarks run on these phantoms. They are built so that self-supervised pretraining has something to
learn and a HU threshold does not solve the tumour task. Every case differs in:

- anatomy: body width, depth, outline and fat (thin to obese), position in the field of view; lung size (inflation),
  diaphragm height (the right dome higher, lower at the back); size, shape (wobbly rotated ellipsoids), orientation and
  position of every organ; pulmonary and hepatic vessel trees, stomach with or without gas, spine, ribs, couch;
- acquisition: contrast phase (non-contrast, arterial, portal venous) with per-tissue HU drawn from realistic ranges
  (kidney cortex and medulla, heart blood pool and myocardium, vessels: :data:`HU_RANGES`), organ texture, noise level
  (8-30 HU), reconstruction kernel (smooth, standard, sharp with edge overshoot), and, unless the caller fixes them,
  the voxel spacing (in-plane 2.0-3.0 mm, slices 2.5-5.0 mm) with a grid that covers 320 mm per axis;
- the tumour (:data:`TUMOUR_TYPES`): a solid nodule with lung all round, a juxtapleural mass on the chest wall, a
  mediastinal/hilar mass against the heart and mediastinum, a part-solid or a pure ground-glass lesion.

Case ``(seed, i)`` depends on nothing else; the patient, the scanner settings and the tumour come from independent
random streams, so forcing a phase or a tumour kind (``phases=``, ``tumour_types=``) rescans the same patient.
Images are int16 HU with a real affine (axes running patient right-to-left, anterior-to-posterior and
inferior-to-superior as a DICOM series converted to NIfTI usually is). Endpoints follow a hidden, noisy rule on tumour
properties (volume, heterogeneity, necrosis, spiculation, lobulation, solid fraction): ``response`` (Task I) and
``recurrence`` (Task II).

HU tables, tumour kinds, the measured threshold baseline and generation time: ``smart_nets/data/README.md``
(numbers from ``python -m benchmarks.phantom_baselines``).

Command line (writes ``OUT_DIR/dataset.json`` in the Medical Segmentation Decathlon form)::

    python -m smart_nets.data.phantoms OUT_DIR --num 16 --seed 0 [--shape "[128,128,64]"] [--spacing "[2.5,2.5,5.0]"]
        [--tumour_types solid,juxtapleural] [--phases portal_venous] [--tumour_radius "[7,24]"]
"""

from ._anatomy import ORGAN_LABELS, Tissue
from ._generate import Phantom, generate_phantoms, make_phantom
from ._intensity import HU_RANGES, KERNELS, PHASES
from ._tumours import ENDPOINT_NOISE_SD, TUMOUR_TYPES, latent_scores

__all__ = [
    "ORGAN_LABELS",
    "Phantom",
    "make_phantom",
    "generate_phantoms",
    "TUMOUR_TYPES",
    "ENDPOINT_NOISE_SD",
    "latent_scores",
    "PHASES",
    "KERNELS",
    "HU_RANGES",
    "Tissue",
]
