"""Stage 4, PPO on one frozen base: pure losses (`losses`), exact-optimum math (`exact`), the four-role model (`model`)."""
