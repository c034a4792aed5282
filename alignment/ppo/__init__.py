"""Stage 4, PPO on one frozen base: the four-role model (`model`), rollout and scoring (`rollout`), reward
sources (`rewards`), pure losses and advantages (`losses`), the stage (`train`) and its config (`config`)."""
