"""Archives analysed in batch: files as the unit of work, each through the daemon's `Session.process`, into a
Parquet dataset partitioned by station and date (`dataset`), by a local pool of worker processes (`job`) or on a
Dask cluster (`cluster`). pyarrow (and dask for `--cluster`) are optional extras, imported where they are used."""
