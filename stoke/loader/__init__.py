"""The loader: the slot ring a pipeline's batches land in, the iterator that hands them out, and the loader that owns workers and ring."""
