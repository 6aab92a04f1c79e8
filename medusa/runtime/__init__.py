"""The process around a run: threads, output-folder locks, data-parallel launches."""
