"""The data side of a pipeline: sources and record formats, the seeded plan, the per-sample program, sample structure, batching (padding, buckets), cache and mixing. Nothing here starts a process."""
