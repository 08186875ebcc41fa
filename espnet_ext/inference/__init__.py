"""Python API for transcribing recordings with a trained model (:class:`Speech2Text`)."""
from espnet_ext.inference.speech2text import Speech2Text, Transcription

__all__ = ["Speech2Text", "Transcription"]
