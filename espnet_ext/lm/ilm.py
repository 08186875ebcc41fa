"""Former home of the internal-LM pieces, kept as names only until every importer has moved:
adapters in :mod:`espnet_ext.lm.decoder_adapters`, :class:`InternalLM` and its loaders in
:mod:`espnet_ext.lm.internal_lm`, :class:`ClampedScorer` in :mod:`espnet_ext.lm.clamped_scorer`,
:class:`HiddenFrozenMixin` in :mod:`espnet_ext.lm.frozen`, ``check_same_tokens`` in
:mod:`espnet_ext.utils.tokens`; the command line is :mod:`espnet_ext.bin.check_token_lists`.
"""
from espnet_ext.lm.clamped_scorer import LOGP_FLOOR, ClampedScorer  # noqa: F401
from espnet_ext.lm.decoder_adapters import make_adapter  # noqa: F401
from espnet_ext.lm.frozen import HiddenFrozenMixin  # noqa: F401
from espnet_ext.lm.internal_lm import (  # noqa: F401
    InternalLM,
    internal_lm_from_asr_model,
    load_internal_lm,
)
from espnet_ext.utils.tokens import check_same_tokens  # noqa: F401
