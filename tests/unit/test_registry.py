"""`import espnet_ext` registers its classes in ESPnet2's stock ClassChoices."""
import subprocess
import sys


def test_registered_in_stock_tasks():
    import espnet2.tasks.asr as asr
    import espnet2.tasks.lm as lm

    import espnet_ext  # noqa: F401
    from espnet_ext.asr.cif_asr_model import CIFASRModel
    from espnet_ext.asr.decoder.cif_decoder import CIFDecoder
    from espnet_ext.asr.encoder.conformer_pooling_encoder import ConformerPoolingEncoder
    from espnet_ext.lm.kd_lm import KDLanguageModel

    assert asr.model_choices.get_class("cif") is CIFASRModel
    assert asr.encoder_choices.get_class("conformer_pooling") is ConformerPoolingEncoder
    assert asr.decoder_choices.get_class("cif_ar") is CIFDecoder
    assert lm.model_choices.get_class("lm_kd") is KDLanguageModel


def test_import_is_cheap_and_registers_on_later_task_import():
    # espnet_ext must not import espnet2's tasks itself (~20 s); registration follows their import.
    code = (
        "import sys, espnet_ext\n"
        "assert 'espnet2.tasks.asr' not in sys.modules\n"
        "from espnet2.tasks.asr import ASRTask, model_choices\n"
        "print(sorted(model_choices.classes))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "'cif'" in out.stdout
