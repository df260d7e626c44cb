"""Writes a miniature of the HF Hub's IMDb repository layout with pyarrow, the
writer the Hub's own files come from, as an independent check of our Parquet
reader: plain_text/test-00000-of-00001.parquet (columns `text` string and
`label` int64, snappy pages, the Hub's `huggingface` schema metadata, two row
groups) and expected.json, the rows as plain JSON.

Usage: python datasets/reference/imdb_hub/make_sample.py  (needs pyarrow)
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))

# Sorted by label like the real test split; texts carry what a reader could
# get wrong: <br /> markup, quotes, non-ASCII, a newline, an empty review.
NEG = [
    "I rented I AM CURIOUS-YELLOW from my video store.<br /><br />Avoid.",
    "\"Quoted\" start, and a comma, then the end",
    "Caf\u00e9 cr\u00e8me \u2014 not worth it \U0001F610",
    "",
]
POS = [
    "A wonderful little production.<br /><br />The filming technique is very unassuming.",
    "Two lines:\nsecond line.",
    "Probably my all-time favorite movie.",
]
TEXTS = NEG + POS
LABELS = [0] * len(NEG) + [1] * len(POS)

FEATURES = {
    "info": {
        "features": {
            "text": {"dtype": "string", "_type": "Value"},
            "label": {"names": ["neg", "pos"], "_type": "ClassLabel"},
        }
    }
}

table = pa.table(
    {"text": pa.array(TEXTS, pa.string()), "label": pa.array(LABELS, pa.int64())}
).replace_schema_metadata({"huggingface": json.dumps(FEATURES)})
out = os.path.join(HERE, "plain_text")
os.makedirs(out, exist_ok=True)
pq.write_table(
    table,
    os.path.join(out, "test-00000-of-00001.parquet"),
    compression="snappy",
    row_group_size=4,
)
with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(
        [{"text": t, "label": l} for t, l in zip(TEXTS, LABELS)],
        f,
        ensure_ascii=False,
        indent=1,
    )
    f.write("\n")
