"""Commands over the figures and the run library: the claims' verdicts
(`check_claims`), the report and figures/README's tables (`report`), the
benchmarks (`bench`, `bench_sweep`, `bench_tensorboard`) and the Kaggle Digit
Recognizer submission (`kaggle`)."""
