"""``taxifare batch-predict``'s formats and defaults, shared by its flags, the job, its input and its output.

Standard library only, so that ``--help`` loads no numpy.
"""

#: The formats of the rows read and of the predictions written.
JSONL = "jsonl"
CSV = "csv"
INSTANCE_FORMATS = (CSV, JSONL)
OUTPUT_FORMATS = (JSONL, CSV)
DEFAULT_BATCH_SIZE = 8192
DEFAULT_SHARD_ROWS = 100_000
#: As trainer.validation.MAX_BAD_FRACTION (a test checks they agree).
DEFAULT_MAX_ERROR_FRACTION = 0.1
