"""RLHF on your own data: SFT, human rankings, reward models and one-base PPO."""

__version__ = "0.1.0"
