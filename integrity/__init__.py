"""cryod.integrity: the record's canonical encoding, digests and pure verification.

Stdlib only, and nothing from the daemon, drivers or simulators: the study
collector (on another database) and a receiver of the record channel import
this package to re-hash exactly the bytes the daemon hashed. The
specification, with test vectors (``vectors.json``), is docs/integrity.md.

- ``canonical``: ``cryod.canon/1`` tokens, ``encode_row`` (``cryod.row/1``),
  ``decode``/``decode_row`` for receivers;
- ``samples``: sample-batch encodings, one function per version
  (``cryod.samples/1``, ``cryod.samples/2``);
- ``digests``: salted row digests, batch digests, an export's rows digest;
- ``chain``: chain entries (v1 legacy, v2 ``cryod.entry/1``), their hashes,
  ``check_chain``;
- ``tables``: ``TableSpec`` (a research table's name, key and typed columns);
- ``check``: rows against the chain, batches against their entries, the
  chain against anchors (``check_rows``, ``check_samples``, ``check_anchors``).
"""

from .canonical import (
    CANON,
    ROW_ENCODING,
    DecodedRow,
    EncodingError,
    Kind,
    decode,
    decode_row,
    encode_json,
    encode_row,
    format_time,
    value_token,
)
from .chain import (
    ENTRY_ENCODING,
    GENESIS_HASH,
    UNPARSABLE,
    ChainCheck,
    Entry,
    Head,
    check_chain,
    entry_bytes,
    entry_hash,
    hash_of,
    legacy_entry_hash,
)
from .check import (
    AnchorHead,
    AnchorProblem,
    AnchorReport,
    BatchClaim,
    Finding,
    Redaction,
    Restore,
    RowClaim,
    RowsReport,
    SampleRedaction,
    SamplesReport,
    batch_claims,
    check_anchors,
    check_rows,
    check_samples,
    id_ranges,
    parse_heads,
    restores,
    row_claims,
    sample_redactions,
)
from .digests import (
    SALT_BYTES,
    batch_digest,
    column_hints,
    new_salt,
    row_digest,
    rows_digest,
    salt_from_hex,
)
from .samples import (
    POLL_COLUMNS_V2,
    SAMPLE_COLUMNS_V1,
    SAMPLES_V1,
    SAMPLES_V2,
    encode_sample_batch,
    encode_sample_batch_v1,
    encode_sample_batch_v2,
)
from .tables import TableSpec

__all__ = [
    "CANON",
    "ENTRY_ENCODING",
    "GENESIS_HASH",
    "POLL_COLUMNS_V2",
    "ROW_ENCODING",
    "SALT_BYTES",
    "SAMPLES_V1",
    "SAMPLES_V2",
    "SAMPLE_COLUMNS_V1",
    "UNPARSABLE",
    "AnchorHead",
    "AnchorProblem",
    "AnchorReport",
    "BatchClaim",
    "ChainCheck",
    "DecodedRow",
    "EncodingError",
    "Entry",
    "Finding",
    "Head",
    "Kind",
    "Redaction",
    "Restore",
    "RowClaim",
    "RowsReport",
    "SampleRedaction",
    "SamplesReport",
    "TableSpec",
    "batch_claims",
    "batch_digest",
    "check_anchors",
    "check_chain",
    "check_rows",
    "check_samples",
    "column_hints",
    "decode",
    "decode_row",
    "encode_json",
    "encode_row",
    "encode_sample_batch",
    "encode_sample_batch_v1",
    "encode_sample_batch_v2",
    "entry_bytes",
    "entry_hash",
    "format_time",
    "hash_of",
    "id_ranges",
    "legacy_entry_hash",
    "new_salt",
    "parse_heads",
    "restores",
    "row_claims",
    "row_digest",
    "rows_digest",
    "salt_from_hex",
    "sample_redactions",
    "value_token",
]
