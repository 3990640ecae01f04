"""The doctor's judgement: pure functions from a record to findings and a diagnosis. No Keras, no clock."""
