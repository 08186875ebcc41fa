"""Offline corpus construction (synthetic speech from Debian text and TTS packages)."""
