"""The autotuner: measures delivered batches and the trainer's own CPU use and picks the executor and worker count."""
