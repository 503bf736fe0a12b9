"""From measurements to answers for machines we did not run on: the bottleneck model (`bottleneck`), the rates it
predicts from, read from runs on disk (`rates`), the instance catalogue it projects onto (`instances`), and what a
result says about a simulated device (`simulated`)."""
