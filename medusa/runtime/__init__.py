"""The process around a run: threads and data-parallel launches (with their prediction shards)."""
