"""The model runtime the trainer and the consumer share (they never import each other):
loading checkpoints, encoding and forward passes, calibration, and the decision rule.
`schemas` keeps the contracts (the manifest's format and checks)."""
