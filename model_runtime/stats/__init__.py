"""The statistics every number people act on comes from: pure functions, no I/O.

  rates.py   what a model's probabilities mean: mean calibrated probability per true label
             (from validation, the trainer's stream test split, or rated reviews in the stream)
  shares.py  a subject's negative share from per-model-version tallies, corrected by each
             version's own rates, with an interval that includes the rates' uncertainty
  spikes.py  the spike rule: one statistic for size and significance, sized for a target
             mean time between false alarms per subject

The consumer's write path, the read side, the trainer and the benches all use these.
"""
