"""The Hydra configs, shipped as a package so `python -m pipeline` finds them from any directory."""
