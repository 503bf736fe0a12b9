"""Named sweeps, shipped as a package so `python -m pipeline sweep=NAME` finds them from any directory."""
