"""What a run writes: the output CSV, the manifest, the rejects, hourly figures, the picture."""
