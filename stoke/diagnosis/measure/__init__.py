"""The doctor's measuring side: hooks into Keras, the step clock and probes, facts read from the run. Writes a record; judges nothing."""
