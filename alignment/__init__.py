"""RLHF on your own data: SFT, human rankings, reward models and one-base PPO."""

import os

# PyTorch's CPU threads are GNU OpenMP's, which spin 300,000 times at every barrier before sleeping. When another
# process holds one of the cores, a spinning thread burns its time slice waiting for a partner that is not
# running: on 2 cores with one busy, PPO on the demo's tiny model took over 120 s instead of 7 s. Spinning 10,000
# times keeps the idle-machine speed (7.2 vs 7.0 s) and took 13 s with the core busy. libgomp reads this once,
# when torch loads it, so it is set here, before anything of this package imports torch; a value set by the
# user wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
