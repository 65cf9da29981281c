"""What every layer shares (standard library only): the bottom layer, below trainer/.

errors.py (``InputError``, one-line CLI errors, ``Command``), atomic.py (write elsewhere then
rename; stale temporaries), storage.py (local and ``gs://`` files), checks.py (value checks
shared by the CLIs, the pipeline and the trainer), layout.py (what a served model base path
holds, and the served model's default name). Nothing here imports trainer/, serving/,
components/ or pipeline/.
"""
