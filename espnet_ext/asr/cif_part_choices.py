"""ESPnet ClassChoices of the CIF model's own parts: ``--predictor`` and ``--distiller``.

CIFASRTask offers them as options (``--predictor cif --predictor_conf {...}``,
``--distiller none|acd|lrd|hkd|... --distiller_conf {...}``) and CIFASRModel builds its parts
through them, so that a new predictor or distiller is one entry here.
"""
from espnet2.train.class_choices import ClassChoices

from espnet_ext.asr.abs_predictor import AbsPredictor
from espnet_ext.asr.cif_predictor import CIFPredictor
from espnet_ext.distill.abs_distiller import AbsDistiller
from espnet_ext.distill.variants import VARIANTS

predictor_choices = ClassChoices(
    name="predictor",
    classes=dict(cif=CIFPredictor),
    type_check=AbsPredictor,
    default="cif",
)

# Default none: no distillation (and no teacher features needed).
distiller_choices = ClassChoices(
    name="distiller",
    classes=VARIANTS,
    type_check=AbsDistiller,
    default=None,
    optional=True,
)
