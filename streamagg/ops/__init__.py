"""The operator shell around the data path: the command, backfills, change checks, logs."""
