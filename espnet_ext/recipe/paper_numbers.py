"""The numbers the two papers report for the rows the recipe reproduces, as data: the seed tables
(:mod:`espnet_ext.recipe.seed_tables`) print them next to our means and check the papers' ordering.

- HKD: Han et al., "Knowledge Transfer from Pre-trained Language Models to Cif-based Speech
  Recognizers via Hierarchical Distillation", Interspeech 2023. Table 1 ("Main results on
  AISHELL-1 (CER %)"), the CIF rows, test set, without and with the LM.
- DR-KD: Chen et al., "Knowledge Distillation Approach for Efficient Internal Language Model
  Estimation", Interspeech 2023. Table 3 ("CER (%) results of using different ILME teachers for KD
  training"), ASR model zh-100kh, test sets Zh (intra-domain) and Med (cross-domain). DR-2gram is
  not in Table 3; its numbers are Table 2's (same model zh-100kh), whose other rows equal Table 3's.

Our recipe measures WER on synthetic English; the papers CER on Mandarin. Only the ordering of the
rows is comparable, not the values.
"""
from dataclasses import dataclass, field
from typing import Dict


@dataclass(frozen=True)
class PaperTable:
    """One paper table: ``values[row][column]`` with our row labels and our column keys
    (``columns`` names the paper's column of each key), printed with the paper's ``decimals``;
    ``sources[row]`` the table a row is from."""

    paper: str
    table: str
    metric: str
    columns: Dict[str, str]
    values: Dict[str, Dict[str, float]]
    decimals: int = 1
    sources: Dict[str, str] = field(default_factory=dict)

    def source(self, row: str) -> str:
        return self.sources.get(row, self.table)


# Column keys: "nolm" / "lm" = decoded without / with the LM (hkd_table1's two WER columns).
HKD_TABLE1 = PaperTable(
    paper="Han et al., Interspeech 2023 (HKD)",
    table="Table 1 (AISHELL-1, test)",
    metric="CER (%)",
    columns={"nolm": "test, no LM", "lm": "test, with LM"},
    values={
        "CIF": {"nolm": 4.9, "lm": 4.8},
        "+ACD": {"nolm": 4.7, "lm": 4.6},
        "+LRD": {"nolm": 4.5, "lm": 4.4},
        "+HKD": {"nolm": 4.2, "lm": 4.1},
    },
)

# Column keys: the internal-LM conditions of asr.sh ("intra": the in-domain LM, "cross": the
# cross-domain LM); rows: ilm_results.METHOD_NAMES.
DRKD_TABLE3 = PaperTable(
    paper="Chen et al., Interspeech 2023 (DR-KD)",
    table="Table 3 (zh-100kh)",
    metric="CER (%)",
    columns={"intra": "Zh (intra-domain)", "cross": "Med (cross-domain)"},
    decimals=2,
    values={
        "No LM": {"intra": 7.61, "cross": 5.07},
        "SF": {"intra": 7.39, "cross": 4.10},
        "ILME-Z": {"intra": 7.18, "cross": 3.78},
        "ILME-L": {"intra": 7.15, "cross": 3.77},
        "DR": {"intra": 7.25, "cross": 3.77},
        "DR-2gram": {"intra": 7.36, "cross": 3.97},
        "DR-KD-Z": {"intra": 7.19, "cross": 3.75},
        "DR-KD-L": {"intra": 7.12, "cross": 3.73},
    },
    sources={"DR-2gram": "Table 2 (zh-100kh; not in Table 3)"},
)
