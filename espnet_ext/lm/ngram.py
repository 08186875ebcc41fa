"""Former home of the 2-gram LM, kept as names only until every importer has moved: estimation
in :mod:`espnet_ext.lm.kneser_ney`, ARPA I/O in :mod:`espnet_ext.lm.arpa`, the scorer in
:mod:`espnet_ext.lm.bigram_lm`, text tokenisation in :mod:`espnet_ext.utils.tokens`, the command
line in :mod:`espnet_ext.bin.ngram_lm_train` (``main`` here is that one, not a CLI of this module).
"""
from espnet_ext.bin.ngram_lm_train import main  # noqa: F401
from espnet_ext.lm.arpa import read_arpa, write_arpa  # noqa: F401
from espnet_ext.lm.bigram_lm import BigramLM  # noqa: F401
from espnet_ext.lm.kneser_ney import estimate_bigram_kn, train_bigram  # noqa: F401
from espnet_ext.utils.tokens import read_token_ids  # noqa: F401
