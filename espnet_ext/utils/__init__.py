"""Recipe machinery: job runners, data directories, features, token lists, scoring.

Everything here is importable without torch or ESPnet (heavy imports happen inside functions), so
the small CLIs under ``utils/`` and ``espnet_ext/bin`` start fast.
"""
